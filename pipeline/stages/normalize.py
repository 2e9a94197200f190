"""Stage 1: raw Wazuh alerts → NormalizedAlert (also stored in `alerts`), or the DLQ."""

from __future__ import annotations

import asyncio

import structlog
from psycopg_pool import AsyncConnectionPool

from pipeline.analysis.normalize import NormalizationError, normalize
from pipeline.kafka.messaging import PRIORITY_HEADER, TENANT_HEADER, Publisher, Record
from pipeline.stages.common import LaneTopics, headers_for, message_key, send_to_dlq
from pipeline.store.alerts import upsert_alerts
from pipeline.telemetry import bind_alert
from schemas.messages import NormalizedAlert

log = structlog.get_logger(__name__)


class NormalizeStage:
    name = "normalize"

    def __init__(self, *, publisher: Publisher, pool: AsyncConnectionPool, output_topic: str,
                 backfill_topic: str, dlq_topic: str, default_tenant: str,
                 batch_output_topic: str | None = None) -> None:
        self._publisher = publisher
        self._pool = pool
        self._output = LaneTopics(output_topic, batch_output_topic)
        self._backfill = backfill_topic
        self._dlq = dlq_topic
        self._default_tenant = default_tenant

    def _normalize(self, record: Record) -> NormalizedAlert:
        tenant = record.headers.get(TENANT_HEADER) or self._default_tenant
        priority = record.headers.get(PRIORITY_HEADER)
        if priority not in ("live", "batch"):
            priority = "batch" if record.topic == self._backfill else "live"
        return normalize(record.value, tenant_id=tenant, priority=priority)  # type: ignore[arg-type]

    async def handle(self, records: list[Record]) -> None:
        good: list[NormalizedAlert] = []
        rejected: list[tuple[Record, str]] = []
        for record in records:
            try:
                good.append(self._normalize(record))
                bind_alert(record, good[-1].alert_id)  # its outputs continue its trace
            except NormalizationError as exc:
                log.warning("alert_rejected", reason=exc.reason, topic=record.topic,
                            offset=record.offset)
                rejected.append((record, exc.reason))
        if good:
            async with self._pool.connection() as conn, conn.transaction():
                await upsert_alerts(conn, good)
        # After the write: if it fails, the batch runner bisects and this runs again for
        # the sub-batch that succeeds, so each dead letter goes out once.
        sends = [send_to_dlq(self._publisher, self._dlq, self.name, record, reason)
                 for record, reason in rejected]
        # The original bytes of a sanitized alert stay in its alerts row: no later stage
        # reads them, and beside `raw` they put a 450 KB alert over the broker's limit.
        sends.extend(self._publisher.publish(self._output.for_alert(a),
                                             a.model_dump_json(exclude={"original_b64"})
                                             .encode(),
                                             key=message_key(a), headers=headers_for(a))
                     for a in good)
        await asyncio.gather(*sends)
