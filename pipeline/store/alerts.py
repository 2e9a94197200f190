"""alerts: one row per (tenant, alert id); a redelivered alert updates nothing."""

from __future__ import annotations

import json
from collections.abc import Sequence

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from schemas.messages import NormalizedAlert

UPSERT = """INSERT INTO alerts (tenant_id, alert_id, fingerprint, rule_id, rule_level,
                                agent_name, alert_ts, priority, normalized, raw)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT (tenant_id, alert_id) DO NOTHING"""


def _row(alert: NormalizedAlert) -> tuple[object, ...]:
    return (alert.tenant_id, alert.alert_id, alert.fingerprint, alert.rule_id,
            alert.rule_level, alert.agent_name, alert.timestamp, alert.priority,
            Jsonb(alert.model_dump(mode="json", exclude={"raw"})),
            # the original Wazuh JSON for the console; ASCII-escaped: NUL and lone
            # surrogates (attacker-controlled) are fine in a JSON string, not in PostgreSQL
            json.dumps(alert.raw, ensure_ascii=True, default=str))


async def upsert_alert(conn: AsyncConnection, alert: NormalizedAlert) -> None:
    await conn.execute(UPSERT, _row(alert))


async def upsert_alerts(conn: AsyncConnection, alerts: Sequence[NormalizedAlert]) -> None:
    """A batch in one round trip: executemany sends every row in pipeline mode and waits
    once (per-row execute waited for each)."""
    async with conn.cursor() as cur:
        await cur.executemany(UPSERT, [_row(alert) for alert in alerts])
