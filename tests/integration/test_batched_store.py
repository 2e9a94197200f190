"""The batched store calls of normalize and retrieve (issue 15: one round trip per batch)
against the real PostgreSQL + pgvector: the same rows as the per-alert calls they replace,
and a redelivered batch adds no row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from psycopg_pool import AsyncConnectionPool

from pipeline.analysis.normalize import normalize
from pipeline.store.alerts import upsert_alerts
from pipeline.store.runbooks import nearest_chunks, nearest_chunks_many
from pipeline.store.verdicts import similar_verdicts, similar_verdicts_many

SAMPLES = [line for line in (Path(__file__).parents[2] / "samples" / "wazuh-alerts.jsonl")
           .read_bytes().splitlines() if line.strip()]


async def test_a_redelivered_batch_of_alerts_adds_no_row(db: AsyncConnectionPool,
                                                          tenant: str) -> None:
    alerts = [normalize(line, tenant_id=f"{tenant}-batch") for line in SAMPLES[:6]]
    for batch in (alerts[:3], alerts):  # the second batch holds the first one again
        async with db.connection() as conn, conn.transaction():
            await upsert_alerts(conn, batch)
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT alert_id FROM alerts WHERE tenant_id = %s ORDER BY alert_id",
            (f"{tenant}-batch",))
        stored = [row[0] for row in await cur.fetchall()]
    assert stored == sorted({a.alert_id for a in alerts})


def _vectors(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(15)
    return [rng.standard_normal(384).astype(np.float32) for _ in range(count)]


async def test_one_runbook_query_per_batch_finds_what_one_per_alert_found(
        db: AsyncConnectionPool) -> None:
    vectors = _vectors(5)
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM runbook_chunks")
        row = await cur.fetchone()
        assert row and row[0] >= 5, "runbooks not loaded (secanalyst runbooks load)"
        batched = await nearest_chunks_many(conn, vectors, 5)
        single = [await nearest_chunks(conn, v, 5) for v in vectors]
    assert [[c.chunk_id for c in group] for group in batched] == \
        [[c.chunk_id for c in group] for group in single]
    assert batched == single


async def test_one_verdict_query_per_batch_keeps_each_alert_to_its_tenant(
        db: AsyncConnectionPool) -> None:
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT tenant_id FROM verdicts WHERE reused_from IS NULL AND embedding IS NOT "
            "NULL GROUP BY tenant_id HAVING count(*) >= 3 LIMIT 1")
        row = await cur.fetchone()
        assert row, "no tenant with verdicts in the shared database"
        queries = [(row[0], v) for v in _vectors(3)] + [("no-such-tenant", _vectors(1)[0])]
        batched = await similar_verdicts_many(conn, queries, 3)
        single = [await similar_verdicts(conn, t, v, 3) for t, v in queries]
    assert batched == single
    assert all(len(group) == 3 for group in batched[:3]) and batched[3] == []
