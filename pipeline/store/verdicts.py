"""verdicts: unique on (tenant, alert id). The first verdict wins; a redelivered alert
never makes a second one. Storm reuse looks up recent originals by fingerprint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from schemas.messages import SimilarVerdict
from schemas.verdict import Verdict

_COLUMNS = ("tenant_id", "alert_id", "rule_id", "rule_level", "severity", "severity_source",
            "summary", "attack", "next_steps", "cited_chunks", "retrieval_ids", "status",
            "review_reason", "model_name", "prompt_version", "input_tokens", "output_tokens",
            "latency_ms", "fingerprint", "incident_key", "reused_from", "provenance",
            "confidence", "attack_dropped", "embedding", "facts", "checks", "explanation")


async def insert_verdict(conn: AsyncConnection, verdict: Verdict,
                         embedding: np.ndarray | None = None) -> bool:
    """Insert; return False when the alert already had a verdict."""
    values: dict[str, Any] = verdict.model_dump(include=set(_COLUMNS))
    values["attack"] = Jsonb([t.model_dump() for t in verdict.attack])
    values["next_steps"] = Jsonb(verdict.next_steps)
    values["provenance"] = Jsonb(verdict.provenance)
    values["facts"] = Jsonb(verdict.facts.model_dump()) if verdict.facts else None
    values["checks"] = Jsonb([c.model_dump() for c in verdict.checks])
    values["embedding"] = embedding
    placeholders = ", ".join(f"%({c})s" for c in _COLUMNS)
    cur = await conn.execute(
        f"INSERT INTO verdicts ({', '.join(_COLUMNS)}) VALUES ({placeholders}) "
        "ON CONFLICT (tenant_id, alert_id) DO NOTHING", values)
    return cur.rowcount == 1


async def count_reuse(conn: AsyncConnection, tenant_id: str, original_alert_id: str) -> None:
    """The storm counter the analyst sees on the original verdict."""
    await conn.execute(
        """UPDATE verdicts SET seen_count = seen_count + 1, last_seen_at = now()
           WHERE tenant_id = %s AND alert_id = %s""", (tenant_id, original_alert_id))


async def recent_original(conn: AsyncConnection, tenant_id: str, fingerprint: str,
                          window_s: float) -> Verdict | None:
    """The newest original verdict of this fingerprint within the window."""
    return await _one_verdict(conn, """
        SELECT * FROM verdicts
        WHERE tenant_id = %s AND fingerprint = %s AND reused_from IS NULL
          AND created_at > now() - make_interval(secs => %s)
        ORDER BY created_at DESC LIMIT 1""", (tenant_id, fingerprint, window_s))


async def nearest_original(conn: AsyncConnection, tenant_id: str, incident_key: str,
                           embedding: np.ndarray, window_s: float,
                           min_similarity: float) -> tuple[Verdict, float] | None:
    """The most similar original of the same incident (rule + entities, any agent)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("""
            SELECT *, 1 - (embedding <=> %s) AS similarity FROM verdicts
            WHERE tenant_id = %s AND incident_key = %s AND reused_from IS NULL
              AND embedding IS NOT NULL
              AND created_at > now() - make_interval(secs => %s)
            ORDER BY embedding <=> %s LIMIT 1""",
            (embedding, tenant_id, incident_key, window_s, embedding))
        row = await cur.fetchone()
    if row is None or row["similarity"] < min_similarity:
        return None
    return _verdict(row), float(row["similarity"])


async def _one_verdict(conn: AsyncConnection, sql: str, params: tuple[Any, ...]
                       ) -> Verdict | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        row = await cur.fetchone()
    return None if row is None else _verdict(row)


def _verdict(row: dict[str, Any]) -> Verdict:
    return Verdict.model_validate({k: v for k, v in row.items() if k in Verdict.model_fields})


async def get_verdict_json(conn: AsyncConnection, tenant_id: str, alert_id: str) -> str | None:
    cur = await conn.execute(
        """SELECT (to_jsonb(v) - 'embedding')::text FROM verdicts v
           WHERE tenant_id = %s AND alert_id = %s""", (tenant_id, alert_id))
    row = await cur.fetchone()
    return None if row is None else str(row[0])


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


async def similar_verdicts(conn: AsyncConnection, tenant_id: str, embedding: np.ndarray,
                           limit: int) -> list[SimilarVerdict]:
    """Past originals of this tenant by cosine; those analysts confirmed, corrected or
    marked false positive weigh more (their judgement is the best context there is)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("""
            SELECT alert_id, rule_id, severity, summary, analyst_status,
                   1 - (embedding <=> %s) AS similarity
            FROM verdicts
            WHERE tenant_id = %s AND reused_from IS NULL AND embedding IS NOT NULL
            ORDER BY embedding <=> %s LIMIT %s""",
            (embedding, tenant_id, embedding, limit * 3))
        rows = await cur.fetchall()
    similar = [SimilarVerdict(**row, score=row["similarity"] * FEEDBACK_WEIGHT.get(
        row["analyst_status"], 1.0)) for row in rows]
    return sorted(similar, key=lambda s: s.score, reverse=True)[:limit]


async def similar_verdicts_many(conn: AsyncConnection,
                                queries: Sequence[tuple[str, np.ndarray]],
                                limit: int) -> list[list[SimilarVerdict]]:
    """similar_verdicts for a batch of (tenant, vector) in one round trip (a LATERAL
    top-k per pair: the same filter, order and limit as one query per alert)."""
    if not queries:
        return []
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("""
            SELECT q.ord, c.alert_id, c.rule_id, c.severity, c.summary, c.analyst_status,
                   c.similarity
            FROM unnest(%s::text[], %s::vector[]) WITH ORDINALITY AS q(tenant, v, ord)
            CROSS JOIN LATERAL (
                SELECT alert_id, rule_id, severity, summary, analyst_status,
                       1 - (embedding <=> q.v) AS similarity
                FROM verdicts
                WHERE tenant_id = q.tenant AND reused_from IS NULL
                      AND embedding IS NOT NULL
                ORDER BY embedding <=> q.v LIMIT %s) c""",
            ([tenant for tenant, _ in queries], [vector for _, vector in queries],
             limit * 3))
        rows = await cur.fetchall()
    grouped: list[list[SimilarVerdict]] = [[] for _ in queries]
    for row in rows:
        index = row.pop("ord") - 1
        grouped[index].append(SimilarVerdict(**row, score=row["similarity"] * FEEDBACK_WEIGHT.get(
            row["analyst_status"], 1.0)))
    return [sorted(group, key=lambda s: s.score, reverse=True)[:limit] for group in grouped]


FEEDBACK_WEIGHT = {"confirmed": 1.25, "corrected": 1.3, "false_positive": 1.25}
