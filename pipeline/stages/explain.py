"""Stage 4: EnrichedAlert → Verdict through the router; stored in `verdicts` (one per
tenant + alert id) and published to the verdicts topic.

Backpressure: over quota or saturated, the stage waits as long as the router says and
tries again; it never drops an alert and never spins.
"""

from __future__ import annotations

import asyncio

import structlog
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from pipeline.explain import explain
from pipeline.messaging import Publisher, Record
from pipeline.router import ContextTooLong, QuotaExceeded, Router, Saturated, UpstreamError
from pipeline.stages.common import headers_for, message_key, send_to_dlq
from pipeline.store.verdicts import get_verdict_json, insert_verdict
from schemas.messages import EnrichedAlert
from schemas.verdict import Verdict

log = structlog.get_logger(__name__)


class ExplainStage:
    name = "explain"

    def __init__(self, *, publisher: Publisher, pool: AsyncConnectionPool, router: Router,
                 output_topic: str, dlq_topic: str, max_tokens: int, temperature: float,
                 concurrency: int, extra_body: dict[str, object] | None = None) -> None:
        self._publisher = publisher
        self._pool = pool
        self._router = router
        self._output = output_topic
        self._dlq = dlq_topic
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._slots = asyncio.Semaphore(concurrency)
        self._extra_body = extra_body or {}

    async def handle(self, records: list[Record]) -> None:
        await asyncio.gather(*(self._one(r) for r in records))

    async def _one(self, record: Record) -> None:
        try:
            enriched = EnrichedAlert.model_validate_json(record.value)
        except ValidationError as exc:
            await send_to_dlq(self._publisher, self._dlq, self.name, record,
                              f"invalid enriched alert: {exc.errors()[0]['msg']}")
            return
        alert = enriched.alert
        async with self._pool.connection() as conn:
            existing = await get_verdict_json(conn, alert.tenant_id, alert.alert_id)
        if existing is not None:  # redelivered: no second LLM call, no second verdict
            log.info("verdict_exists", tenant_id=alert.tenant_id, alert_id=alert.alert_id)
            await self._publish(enriched, existing)
            return
        async with self._slots:
            try:
                verdict = await self._explain_with_backpressure(enriched)
            except (ContextTooLong, UpstreamError) as exc:
                await send_to_dlq(self._publisher, self._dlq, self.name, record, str(exc))
                return
        async with self._pool.connection() as conn, conn.transaction():
            await insert_verdict(conn, verdict)
        await self._publish(enriched, verdict.model_dump_json())

    async def _explain_with_backpressure(self, enriched: EnrichedAlert) -> Verdict:
        while True:
            try:
                return await explain(enriched, self._router, max_tokens=self._max_tokens,
                                     temperature=self._temperature,
                                     extra_body=self._extra_body)
            except (QuotaExceeded, Saturated) as exc:
                log.info("explain_paused", reason=type(exc).__name__,
                         retry_after=exc.retry_after, alert_id=enriched.alert.alert_id)
                await asyncio.sleep(exc.retry_after)

    async def _publish(self, enriched: EnrichedAlert, verdict_json: str) -> None:
        await self._publisher.publish(self._output, verdict_json.encode(),
                                      key=message_key(enriched.alert),
                                      headers=headers_for(enriched.alert))
