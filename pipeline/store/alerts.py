"""alerts: one row per (tenant, alert id); a redelivered alert updates nothing."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from schemas.messages import NormalizedAlert


async def upsert_alert(conn: AsyncConnection, alert: NormalizedAlert) -> None:
    await conn.execute(
        """INSERT INTO alerts (tenant_id, alert_id, fingerprint, rule_id, rule_level,
                               agent_name, alert_ts, priority, normalized)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (tenant_id, alert_id) DO NOTHING""",
        (alert.tenant_id, alert.alert_id, alert.fingerprint, alert.rule_id, alert.rule_level,
         alert.agent_name, alert.timestamp, alert.priority,
         Jsonb(alert.model_dump(mode="json", exclude={"raw"}))),
    )
