"""llm_usage_events: written in batches with COPY, off the request path."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import AsyncConnection

from schemas.usage import UsageEvent

_COLUMNS = ("id", "tenant_id", "model_name", "pool", "replica", "priority", "request_id",
            "alert_id", "input_tokens", "output_tokens", "total_tokens", "ttft_ms",
            "total_latency_ms", "status_code", "error_kind", "created_at")


async def copy_usage_events(conn: AsyncConnection, events: Sequence[UsageEvent]) -> int:
    async with conn.cursor() as cur, cur.copy(
        f"COPY llm_usage_events ({', '.join(_COLUMNS)}) FROM STDIN"
    ) as copy:
        for e in events:
            await copy.write_row((
                e.id, e.tenant_id, e.model_name, e.pool, e.replica, e.priority, e.request_id,
                e.alert_id, e.input_tokens, e.output_tokens, e.total_tokens, e.ttft_ms,
                e.total_latency_ms, e.status_code, e.error_kind, e.created_at))
    return len(events)
