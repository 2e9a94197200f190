"""Stage 4: EnrichedAlert → Verdict; stored in `verdicts` (one per tenant + alert id) and
published to the verdicts topic.

Within a batch, alerts of one fingerprint are handled in order, so the first one's
verdict is stored before the next looks for it: a storm costs one LLM call, not one per
alert. Different fingerprints run concurrently (bounded).

Backpressure: over quota or saturated, the stage waits as long as the router says and
tries again; it never drops an alert and never spins.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import structlog
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from pipeline.config import RetrievalSettings, StormSettings
from pipeline.explain import explain
from pipeline.messaging import Publisher, Record
from pipeline.router import (
    ContextTooLong,
    QuotaExceeded,
    RequestOverQuota,
    Router,
    Saturated,
    UpstreamError,
)
from pipeline.stages.common import headers_for, message_key, send_to_dlq
from pipeline.store.verdicts import count_reuse, get_verdict_json, insert_verdict
from pipeline.storm import find_reusable, reuse_verdict
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
        self.llm_verdicts = 0
        self.reused_verdicts = 0

    async def handle(self, records: list[Record]) -> None:
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
        await asyncio.gather(*(self._group(members) for members in groups.values()))

    async def _group(self, members: list[tuple[Record, EnrichedAlert]]) -> None:
        for record, enriched in members:
            await self._one(record, enriched)

    async def _one(self, record: Record, enriched: EnrichedAlert) -> None:
        alert = enriched.alert
        embedding = (np.asarray(enriched.embedding, dtype=np.float32)
                     if enriched.embedding else None)
        async with self._pool.connection() as conn:
            existing = await get_verdict_json(conn, alert.tenant_id, alert.alert_id)
            if existing is not None:  # redelivered: no second LLM call, no second verdict
                log.info("verdict_exists", tenant_id=alert.tenant_id, alert_id=alert.alert_id)
                await conn.rollback()
                await self._publish(enriched, existing)
                return
            reusable = await find_reusable(conn, alert, embedding, self._options.storm)
            if reusable is not None:
                original, match = reusable
                verdict = reuse_verdict(alert, original, match)
                async with conn.transaction():
                    if await insert_verdict(conn, verdict, embedding=None):
                        await count_reuse(conn, alert.tenant_id, original.alert_id)
                self.reused_verdicts += 1
                await self._publish(enriched, verdict.model_dump_json())
                return
            await conn.rollback()
        async with self._slots:
            try:
                verdict = await self._explain_with_backpressure(enriched)
            except (ContextTooLong, RequestOverQuota, UpstreamError) as exc:
                await send_to_dlq(self._publisher, self._dlq, self.name, record, str(exc))
                return
        async with self._pool.connection() as conn, conn.transaction():
            await insert_verdict(conn, verdict, embedding=embedding)
        self.llm_verdicts += 1
        await self._publish(enriched, verdict.model_dump_json())

    async def _explain_with_backpressure(self, enriched: EnrichedAlert) -> Verdict:
        options = self._options
        while True:
            try:
                return await explain(enriched, self._router, max_tokens=options.max_tokens,
                                     temperature=options.temperature,
                                     extra_body=options.extra_body,
                                     context_budget=options.retrieval.token_budget,
                                     alert_budget=options.retrieval.alert_token_budget)
            except (QuotaExceeded, Saturated) as exc:
                log.info("explain_paused", reason=type(exc).__name__,
                         retry_after=exc.retry_after, alert_id=enriched.alert.alert_id)
                await asyncio.sleep(exc.retry_after)

    async def _publish(self, enriched: EnrichedAlert, verdict_json: str) -> None:
        await self._publisher.publish(self._output, verdict_json.encode(),
                                      key=message_key(enriched.alert),
                                      headers=headers_for(enriched.alert))
