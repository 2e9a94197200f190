"""Stage 4: EnrichedAlert → Verdict; stored in `verdicts` (one per tenant + alert id) and
published to the verdicts topic.

Within a batch, alerts of one fingerprint are handled in order, so the first one's
verdict is stored before the next looks for it: a storm costs one LLM call, not one per
alert. Different fingerprints run concurrently (bounded); those of one incident (one
scanner, many agents) do not each call the LLM: an alert that would reuse the verdict of
a call in flight waits for it (single-flight, pipeline/analysis/storm.py).

Backpressure: over quota, the stage waits as long as the router says and tries again.
Outage (every replica down, refused or saturated): one circuit for the whole stage
(pipeline/stages/circuit.py) opens, no call is made while it is open, a probe goes after a
capped exponential back-off, and the alerts not finished simply wait — the batch is not
rewound, so nothing verdicted is published twice and no good alert is dead-lettered.
Only an error of the request itself (too long, over the tenant's quota for good, a 4xx
from the server) dead-letters the alert. A pause longer than `max_pause_s` (kept under
the subscription's max_poll_interval of 30 min, so the consumer keeps its partitions)
leaves the batch to be redelivered.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import structlog
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from pipeline.analysis.explain import explain
from pipeline.analysis.prompt import TaskSize
from pipeline.analysis.storm import InFlight, find_reusable, reuse_verdict
from pipeline.config import RetrievalSettings, StormSettings
from pipeline.kafka.messaging import Publisher, Record
from pipeline.router import (
    ContextTooLong,
    NoHealthyReplica,
    QuotaExceeded,
    RequestOverQuota,
    Router,
    Saturated,
    UpstreamError,
)
from pipeline.stages.circuit import CircuitGate
from pipeline.stages.common import headers_for, message_key, send_to_dlq
from pipeline.store.verdicts import count_reuse, get_verdict_json, insert_verdict
from pipeline.telemetry import record_context
from schemas.messages import EnrichedAlert
from schemas.verdict import Verdict

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ExplainOptions:
    max_tokens: int
    temperature: float
    concurrency: int
    extra_body: dict[str, object]
    retrieval: RetrievalSettings
    storm: StormSettings
    task_size: TaskSize = "small"
    # Longest wait for the model server within one batch: under the consumer's
    # max_poll_interval (30 min), or the group would drop the consumer mid-batch.
    max_pause_s: float = 25 * 60


def outage_hold_s(exc: BaseException) -> float | None:
    """Seconds the circuit should stay open at least when `exc` means the model server
    cannot be reached; None when it is this request's own error."""
    if isinstance(exc, Saturated):
        return exc.retry_after
    if isinstance(exc, NoHealthyReplica):
        return 0.0
    if isinstance(exc, UpstreamError):
        status = exc.upstream_status  # None: connection or stream broken
        if status is None or status >= 500 or status in (408, 429):
            return 0.0
    return None


class ExplainStage:
    name = "explain"

    def __init__(self, *, publisher: Publisher, pool: AsyncConnectionPool, router: Router,
                 output_topic: str, dlq_topic: str, options: ExplainOptions) -> None:
        self._publisher = publisher
        self._pool = pool
        self._router = router
        self._output = output_topic
        self._dlq = dlq_topic
        self._options = options
        self._slots = asyncio.Semaphore(options.concurrency)
        self.circuit = CircuitGate("model_server")
        self.flights = InFlight(options.storm)
        self.llm_verdicts = 0
        self.reused_verdicts = 0

    async def handle(self, records: list[Record]) -> None:
        deadline = time.monotonic() + self._options.max_pause_s
        groups: dict[str, list[tuple[Record, EnrichedAlert]]] = defaultdict(list)
        for record in records:
            try:
                enriched = EnrichedAlert.model_validate_json(record.value)
            except ValidationError as exc:
                await send_to_dlq(self._publisher, self._dlq, self.name, record,
                                  f"invalid enriched alert: {exc.errors()[0]['msg']}")
                continue
            alert = enriched.alert
            groups[f"{alert.tenant_id}:{alert.fingerprint}"].append((record, enriched))
        await asyncio.gather(*(self._group(members, deadline) for members in groups.values()))

    async def _group(self, members: list[tuple[Record, EnrichedAlert]],
                     deadline: float) -> None:
        for record, enriched in members:
            with record_context(record):  # the LLM call's span is a child of the record's
                await self._one(record, enriched, deadline)

    async def _one(self, record: Record, enriched: EnrichedAlert, deadline: float) -> None:
        alert = enriched.alert
        embedding = (np.asarray(enriched.embedding, dtype=np.float32)
                     if enriched.embedding else None)
        while True:
            leader = self.flights.leader_for(alert, embedding)
            if leader is not None:  # its verdict will be ours: wait instead of a 2nd call
                log.debug("storm_follower", alert_id=alert.alert_id,
                          leader=leader.alert.alert_id)
                await leader.done.wait()
                continue
            finished = self.flights.completions(alert)
            if await self._answer_from_store(enriched, embedding):
                return
            # A call of this incident started or ended while we looked: look again.
            if (self.flights.leader_for(alert, embedding) is None
                    and self.flights.completions(alert) == finished):
                break
        async with self.flights.lead(alert, embedding):
            async with self._slots:
                try:
                    verdict = await self.circuit.call(
                        lambda: self._explain_with_backpressure(enriched), outage_hold_s,
                        deadline=deadline)
                except (ContextTooLong, RequestOverQuota, UpstreamError) as exc:
                    await send_to_dlq(self._publisher, self._dlq, self.name, record,
                                      str(exc))
                    return
            async with self._pool.connection() as conn, conn.transaction():
                await insert_verdict(conn, verdict, embedding=embedding)
        self.llm_verdicts += 1
        await self._publish(enriched, verdict.model_dump_json())

    async def _answer_from_store(self, enriched: EnrichedAlert,
                                 embedding: np.ndarray | None) -> bool:
        """Publish the stored verdict (redelivery) or a reused one; False when the alert
        needs an LLM call."""
        alert = enriched.alert
        async with self._pool.connection() as conn:
            existing = await get_verdict_json(conn, alert.tenant_id, alert.alert_id)
            if existing is not None:  # redelivered: no second LLM call, no second verdict
                log.info("verdict_exists", tenant_id=alert.tenant_id, alert_id=alert.alert_id)
                await conn.rollback()
                await self._publish(enriched, existing)
                return True
            reusable = await find_reusable(conn, alert, embedding, self._options.storm)
            if reusable is None:
                await conn.rollback()
                return False
            original, match = reusable
            verdict = reuse_verdict(alert, original, match)
            async with conn.transaction():
                if await insert_verdict(conn, verdict, embedding=None):
                    await count_reuse(conn, alert.tenant_id, original.alert_id)
        self.reused_verdicts += 1
        await self._publish(enriched, verdict.model_dump_json())
        return True

    async def _explain_with_backpressure(self, enriched: EnrichedAlert) -> Verdict:
        options = self._options
        while True:
            try:
                return await explain(enriched, self._router, max_tokens=options.max_tokens,
                                     temperature=options.temperature,
                                     extra_body=options.extra_body,
                                     context_budget=options.retrieval.token_budget,
                                     alert_budget=options.retrieval.alert_token_budget,
                                     task_size=options.task_size)
            except QuotaExceeded as exc:  # this tenant's, not the server's: wait alone
                log.info("explain_paused", reason=type(exc).__name__,
                         retry_after=exc.retry_after, alert_id=enriched.alert.alert_id)
                await asyncio.sleep(exc.retry_after)

    async def _publish(self, enriched: EnrichedAlert, verdict_json: str) -> None:
        await self._publisher.publish(self._output, verdict_json.encode(),
                                      key=message_key(enriched.alert),
                                      headers=headers_for(enriched.alert))
