"""Resources of one worker process, opened once at start and injected into the stages."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from pipeline.analysis.embedding import Embedder
from pipeline.collector import settle_for_serving
from pipeline.config import Settings
from pipeline.router import Router
from pipeline.router.build import build_router as build_router_from
from pipeline.router.metrics import MeteredUsageSink
from pipeline.router.tokens import counter_for
from pipeline.router.usage import BatchingUsageWriter, UsageSink
from pipeline.router_settings import router_config
from pipeline.store.database import open_pool
from pipeline.store.usage import PostgresUsageStore

STAGES = ("normalize", "embed", "retrieve", "explain")


def tokenizer_dir(settings: Settings) -> Path:
    if settings.llm.tokenizer_path is not None:
        return settings.llm.tokenizer_path
    from pipeline.devstack.model import converted_model_dir

    return converted_model_dir(settings.cache_dir)


@dataclass
class Runtime:
    settings: Settings
    pool: AsyncConnectionPool
    embedder: Embedder | None = None
    router: Router | None = None
    usage_writer: BatchingUsageWriter | None = None
    _closed: bool = field(default=False, repr=False)

    @classmethod
    async def open(cls, settings: Settings, stages: Collection[str]) -> Runtime:
        pool = await open_pool(settings)
        runtime = cls(settings=settings, pool=pool)
        if "embed" in stages:
            runtime.embedder = await asyncio.to_thread(Embedder.from_settings, settings)
        if "explain" in stages:
            runtime.usage_writer = usage_writer_for(settings, pool)
            runtime.usage_writer.start()
            # Metered: the worker's /metrics has the LLM tokens (pipeline/router/metrics.py).
            runtime.router = await asyncio.to_thread(build_router, settings,
                                                     MeteredUsageSink(runtime.usage_writer))
        settle_for_serving()  # models and tokenizer loaded: freeze them, raise gen-0
        return runtime

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.router:
            await self.router.close()
        if self.usage_writer:
            await self.usage_writer.close()
        await self.pool.close()


def usage_writer_for(settings: Settings, pool: AsyncConnectionPool) -> BatchingUsageWriter:
    """The usage writer on the database; at its start it settles the rows earlier
    processes left in flight (killed mid-call) once no request can still be running:
    older than the request timeout (a later final event would still correct one)."""
    return BatchingUsageWriter(PostgresUsageStore(pool),
                               abandoned_after_s=settings.llm.request_timeout_s)


def build_router(settings: Settings, usage: UsageSink) -> Router:
    return build_router_from(router_config(settings), counter_for(tokenizer_dir(settings)),
                             usage)
