"""`secanalyst runbooks load`: embed new or changed chunks, drop removed ones."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.analysis.embedding import Embedder
from pipeline.analysis.runbooks import load_chunks
from pipeline.config import Settings
from pipeline.store.database import open_pool
from pipeline.store.runbooks import (
    RunbookChunkRow,
    delete_chunks_except,
    known_hashes,
    upsert_chunks,
)


@dataclass(frozen=True)
class LoadReport:
    chunks: int
    embedded: int
    removed: int


async def load_runbooks(settings: Settings, folder: Path,
                        embedder: Embedder | None = None) -> LoadReport:
    chunks = load_chunks(folder)
    pool = await open_pool(settings)
    try:
        async with pool.connection() as conn:
            known = await known_hashes(conn)
        changed = [c for c in chunks if known.get(c.chunk_id) != c.sha256]
        if changed:
            embedder = embedder or Embedder(settings.embedding.model_path)
            vectors = embedder.embed([c.embedding_text() for c in changed])
            rows = [RunbookChunkRow(chunk_id=c.chunk_id, runbook=c.runbook.slug,
                                    title=c.runbook.title, heading=c.heading,
                                    attack_ids=c.runbook.attack_ids,
                                    wazuh_groups=c.runbook.wazuh_groups,
                                    wazuh_rules=c.runbook.wazuh_rules, content=c.content,
                                    content_sha256=c.sha256, embedding=v)
                    for c, v in zip(changed, vectors, strict=True)]
        async with pool.connection() as conn, conn.transaction():
            if changed:
                await upsert_chunks(conn, rows)
            removed = await delete_chunks_except(conn, [c.chunk_id for c in chunks])
        return LoadReport(chunks=len(chunks), embedded=len(changed), removed=removed)
    finally:
        await pool.close()
