"""`secanalyst runbooks load`: embed new or changed chunks, drop removed ones.

A chunk is changed when its text changed, or when its stored vector came from other
weights or from an engine whose vectors are not interchangeable with the current one
(`embedding.backend`, see embedding_backends.compatible): retrieval compares alert vectors
with these, so both must come from the same space."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.analysis.embedding import Embedder, model_id
from pipeline.analysis.embedding_backends import compatible
from pipeline.analysis.runbooks import Chunk, load_chunks
from pipeline.config import Settings
from pipeline.store.database import open_pool
from pipeline.store.runbooks import (
    RunbookChunkRow,
    StoredChunk,
    delete_chunks_except,
    stored_chunks,
    upsert_chunks,
)


@dataclass(frozen=True)
class LoadReport:
    chunks: int
    embedded: int
    removed: int


def needs_embedding(chunk: Chunk, stored: StoredChunk | None, model_id: str,
                    backend: str) -> bool:
    return (stored is None or stored.content_sha256 != chunk.sha256
            or stored.embedding_model != model_id
            or not compatible(stored.embedding_backend, backend))


async def load_runbooks(settings: Settings, folder: Path,
                        embedder: Embedder | None = None) -> LoadReport:
    chunks = load_chunks(folder)
    pool = await open_pool(settings)
    try:
        async with pool.connection() as conn:
            known = await stored_chunks(conn)
        # Decided before the model is loaded: most loads change nothing.
        current = (embedder.model_id, embedder.backend) if embedder else (
            model_id(settings.embedding.model_path), settings.embedding.backend)
        changed = [c for c in chunks if needs_embedding(c, known.get(c.chunk_id), *current)]
        if changed:
            embedder = embedder or Embedder.from_settings(settings)
            vectors = embedder.embed([c.embedding_text() for c in changed])
            rows = [RunbookChunkRow(chunk_id=c.chunk_id, runbook=c.runbook.slug,
                                    title=c.runbook.title, heading=c.heading,
                                    attack_ids=c.runbook.attack_ids,
                                    wazuh_groups=c.runbook.wazuh_groups,
                                    wazuh_rules=c.runbook.wazuh_rules, content=c.content,
                                    content_sha256=c.sha256, embedding=v,
                                    embedding_model=embedder.model_id,
                                    embedding_backend=embedder.backend)
                    for c, v in zip(changed, vectors, strict=True)]
        async with pool.connection() as conn, conn.transaction():
            if changed:
                await upsert_chunks(conn, rows)
            removed = await delete_chunks_except(conn, [c.chunk_id for c in chunks])
        return LoadReport(chunks=len(chunks), embedded=len(changed), removed=removed)
    finally:
        await pool.close()
