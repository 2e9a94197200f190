"""alerts: one row per (tenant, alert id); a redelivered alert updates nothing."""

from __future__ import annotations

import json

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from schemas.messages import NormalizedAlert


async def upsert_alert(conn: AsyncConnection, alert: NormalizedAlert) -> None:
    await conn.execute(
        """INSERT INTO alerts (tenant_id, alert_id, fingerprint, rule_id, rule_level,
                               agent_name, alert_ts, priority, normalized, raw)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (tenant_id, alert_id) DO NOTHING""",
        (alert.tenant_id, alert.alert_id, alert.fingerprint, alert.rule_id, alert.rule_level,
         alert.agent_name, alert.timestamp, alert.priority,
         Jsonb(alert.model_dump(mode="json", exclude={"raw"})),
         # the original Wazuh JSON for the console; ASCII-escaped: NUL and lone
         # surrogates (attacker-controlled) are fine in a JSON string, not in PostgreSQL
         json.dumps(alert.raw, ensure_ascii=True, default=str)),
    )
