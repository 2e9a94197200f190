"""verdicts: unique on (tenant, alert id). The first verdict wins; a redelivered alert
never makes a second one."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from schemas.verdict import Verdict


async def insert_verdict(conn: AsyncConnection, verdict: Verdict) -> bool:
    """Insert; return False when the alert already had a verdict."""
    cur = await conn.execute(
        """INSERT INTO verdicts (tenant_id, alert_id, rule_id, rule_level, severity,
                                 severity_source, summary, attack, next_steps, cited_chunks,
                                 status, review_reason, model_name, prompt_version,
                                 input_tokens, output_tokens, latency_ms)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
           ON CONFLICT (tenant_id, alert_id) DO NOTHING""",
        (verdict.tenant_id, verdict.alert_id, verdict.rule_id, verdict.rule_level,
         verdict.severity, verdict.severity_source, verdict.summary,
         Jsonb([t.model_dump() for t in verdict.attack]), Jsonb(verdict.next_steps),
         verdict.cited_chunks, verdict.status, verdict.review_reason, verdict.model_name,
         verdict.prompt_version, verdict.input_tokens, verdict.output_tokens,
         verdict.latency_ms),
    )
    return cur.rowcount == 1


async def verdicts_for(conn: AsyncConnection, tenant_id: str,
                       alert_ids: list[str]) -> list[dict[str, object]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT v.*, COALESCE(u.input_tokens, 0) AS usage_input_tokens,
                      COALESCE(u.output_tokens, 0) AS usage_output_tokens
               FROM verdicts v
               LEFT JOIN LATERAL (
                   SELECT sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens
                   FROM llm_usage_events e
                   WHERE e.tenant_id = v.tenant_id AND e.alert_id = v.alert_id) u ON true
               WHERE v.tenant_id = %s AND v.alert_id = ANY(%s)
               ORDER BY v.rule_level DESC, v.alert_id""",
            (tenant_id, alert_ids))
        return await cur.fetchall()


async def get_verdict_json(conn: AsyncConnection, tenant_id: str, alert_id: str) -> str | None:
    cur = await conn.execute(
        """SELECT row_to_json(v)::text FROM verdicts v
           WHERE tenant_id = %s AND alert_id = %s""", (tenant_id, alert_id))
    row = await cur.fetchone()
    return None if row is None else str(row[0])
