"""What the gateway process opens once at start (in the app's lifespan) and closes at
stop: the database pool, the usage writer (metered), the router and the key checker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from pipeline.config import Settings
from pipeline.router import ChatRequest, Completion, QuotaExceeded, Saturated
from pipeline.router.metrics import MeteredUsageSink
from pipeline.runtime import build_router, usage_writer_for
from pipeline.store.apikeys import load_pepper
from pipeline.store.database import open_pool
from pipeline.web.auth import ApiKeyAuthenticator, KeyAuthenticator


class ChatRouter(Protocol):
    model_name: str

    async def complete(self, request: ChatRequest) -> Completion: ...

    def stream(self, request: ChatRequest) -> AsyncIterator[str | Completion]: ...

    def relay(self, request: ChatRequest) -> AsyncIterator[bytes | Completion]: ...

    async def readiness(self) -> tuple[bool, str]: ...


class LoadShedder(Protocol):
    def shed(self, tenant_id: str,
             wait_budget_s: float | None = None) -> QuotaExceeded | Saturated | None:
        """The refusal a request would get now, decided before any costly work."""
        ...


@dataclass(frozen=True)
class GatewayResources:
    router: ChatRouter
    auth: KeyAuthenticator
    shedder: LoadShedder | None = None


@asynccontextmanager
async def open_gateway_resources(settings: Settings) -> AsyncIterator[GatewayResources]:
    pool = await open_pool(settings)
    writer = usage_writer_for(settings, pool)
    writer.start()
    try:
        router = await asyncio.to_thread(build_router, settings, MeteredUsageSink(writer))
        try:
            auth = ApiKeyAuthenticator(pool, load_pepper(settings),
                                       cache_s=settings.gateway.api_key_cache_s)
            yield GatewayResources(router=router, auth=auth, shedder=router)
        finally:
            await router.close()
    finally:
        await writer.close()
        await pool.close()
