"""runbook_chunks: embedded runbook sections, searched by cosine distance (pgvector HNSW)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from psycopg import AsyncConnection

from schemas.messages import RunbookCitation


@dataclass(frozen=True)
class RunbookChunkRow:
    chunk_id: str
    runbook: str
    title: str
    heading: str
    attack_ids: list[str]
    wazuh_groups: list[str]
    wazuh_rules: list[str]
    content: str
    content_sha256: str
    embedding: np.ndarray
    embedding_model: str  # the weights (name@fingerprint), see pipeline/analysis/embedding.py
    embedding_backend: str  # the engine that ran them


@dataclass(frozen=True)
class StoredChunk:
    """What decides whether a stored passage must be embedded again."""

    content_sha256: str
    embedding_model: str
    embedding_backend: str


async def upsert_chunks(conn: AsyncConnection, rows: Sequence[RunbookChunkRow]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(
            """INSERT INTO runbook_chunks (chunk_id, runbook, title, heading, attack_ids,
                   wazuh_groups, wazuh_rules, content, content_sha256, embedding,
                   embedding_model, embedding_backend)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (chunk_id) DO UPDATE SET
                   runbook = EXCLUDED.runbook, title = EXCLUDED.title,
                   heading = EXCLUDED.heading, attack_ids = EXCLUDED.attack_ids,
                   wazuh_groups = EXCLUDED.wazuh_groups, wazuh_rules = EXCLUDED.wazuh_rules,
                   content = EXCLUDED.content, content_sha256 = EXCLUDED.content_sha256,
                   embedding = EXCLUDED.embedding, embedding_model = EXCLUDED.embedding_model,
                   embedding_backend = EXCLUDED.embedding_backend, loaded_at = now()""",
            [(r.chunk_id, r.runbook, r.title, r.heading, r.attack_ids, r.wazuh_groups,
              r.wazuh_rules, r.content, r.content_sha256, r.embedding, r.embedding_model,
              r.embedding_backend) for r in rows],
        )


async def stored_chunks(conn: AsyncConnection) -> dict[str, StoredChunk]:
    cur = await conn.execute("SELECT chunk_id, content_sha256, embedding_model, "
                             "embedding_backend FROM runbook_chunks")
    return {row[0]: StoredChunk(row[1], row[2], row[3]) for row in await cur.fetchall()}


async def delete_chunks_except(conn: AsyncConnection, keep: Sequence[str]) -> int:
    cur = await conn.execute("DELETE FROM runbook_chunks WHERE NOT (chunk_id = ANY(%s))",
                             (list(keep),))
    return cur.rowcount


async def nearest_chunks(conn: AsyncConnection, embedding: np.ndarray,
                         limit: int) -> list[RunbookCitation]:
    cur = await conn.execute(
        """SELECT chunk_id, runbook, title, heading, attack_ids, wazuh_groups, wazuh_rules,
                  1 - (embedding <=> %s) AS score, content
           FROM runbook_chunks ORDER BY embedding <=> %s LIMIT %s""",
        (embedding, embedding, limit))
    return [RunbookCitation(chunk_id=r[0], runbook=r[1], title=r[2], heading=r[3],
                            attack_ids=list(r[4]), wazuh_groups=list(r[5]),
                            wazuh_rules=list(r[6]), score=float(r[7]), text=r[8])
            for r in await cur.fetchall()]


async def nearest_chunks_many(conn: AsyncConnection, embeddings: Sequence[np.ndarray],
                              limit: int) -> list[list[RunbookCitation]]:
    """nearest_chunks for a batch of alerts in one round trip: a LATERAL top-k per vector
    (the same ORDER BY … LIMIT, so the same plan and rows as one query per alert)."""
    if not embeddings:
        return []
    cur = await conn.execute(
        """SELECT q.ord, c.chunk_id, c.runbook, c.title, c.heading, c.attack_ids,
                  c.wazuh_groups, c.wazuh_rules, c.score, c.content
           FROM unnest(%s::vector[]) WITH ORDINALITY AS q(v, ord)
           CROSS JOIN LATERAL (
               SELECT chunk_id, runbook, title, heading, attack_ids, wazuh_groups,
                      wazuh_rules, 1 - (embedding <=> q.v) AS score, content,
                      embedding <=> q.v AS distance
               FROM runbook_chunks ORDER BY embedding <=> q.v LIMIT %s) c
           ORDER BY q.ord, c.distance""",
        (list(embeddings), limit))
    out: list[list[RunbookCitation]] = [[] for _ in embeddings]
    for r in await cur.fetchall():
        out[r[0] - 1].append(RunbookCitation(
            chunk_id=r[1], runbook=r[2], title=r[3], heading=r[4], attack_ids=list(r[5]),
            wazuh_groups=list(r[6]), wazuh_rules=list(r[7]), score=float(r[8]), text=r[9]))
    return out
