"""Stored runbook vectors record their model and engine (migration 0012), and
`runbooks load` re-embeds a passage whose vector came from an incompatible engine
(issue 15). Real PostgreSQL + pgvector, real MiniLM."""

from __future__ import annotations

from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from pipeline.analysis.embedding import Embedder
from pipeline.analysis.runbook_loader import load_runbooks
from pipeline.config import Settings

ROOT = Path(__file__).parents[2]


async def test_vectors_record_their_model_and_a_backend_change_re_embeds(
        settings: Settings, db: AsyncConnectionPool) -> None:
    embedder = Embedder.from_settings(settings)
    await load_runbooks(settings, ROOT / "runbooks", embedder)
    async with db.connection() as conn:
        cur = await conn.execute("SELECT DISTINCT embedding_model, embedding_backend "
                                 "FROM runbook_chunks")
        assert await cur.fetchall() == [(embedder.model_id, embedder.backend)]
        cur = await conn.execute("SELECT chunk_id FROM runbook_chunks ORDER BY chunk_id "
                                 "LIMIT 1")
        row = await cur.fetchone()
    assert row is not None
    # Same model, same engine: nothing to embed.
    assert (await load_runbooks(settings, ROOT / "runbooks", embedder)).embedded == 0
    # A vector an int8 engine made is another space: embedded again with the current one.
    async with db.connection() as conn:
        await conn.execute("UPDATE runbook_chunks SET embedding_backend = 'onnx-int8' "
                           "WHERE chunk_id = %s", (row[0],))
    report = await load_runbooks(settings, ROOT / "runbooks", embedder)
    assert report.embedded == 1
    async with db.connection() as conn:
        cur = await conn.execute("SELECT embedding_backend FROM runbook_chunks "
                                 "WHERE chunk_id = %s", (row[0],))
        assert await cur.fetchone() == (embedder.backend,)
