"""Which alerts already have a verdict: backfill does not even publish those."""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import AsyncConnection


class ExistingVerdictLookup:
    def __init__(self, conn: AsyncConnection) -> None:
        self._conn = conn

    async def __call__(self, tenant_id: str, alert_ids: Sequence[str]) -> set[str]:
        cur = await self._conn.execute(
            "SELECT alert_id FROM verdicts WHERE tenant_id = %s AND alert_id = ANY(%s)",
            (tenant_id, list(alert_ids)))
        return {row[0] for row in await cur.fetchall()}
