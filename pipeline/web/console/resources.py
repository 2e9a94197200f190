"""What the console opens once at start (in the app's lifespan) and closes at stop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from pipeline.config import Settings
from pipeline.store.console import tenant_scope
from pipeline.store.database import open_pool


@dataclass(frozen=True)
class ConsoleResources:
    pool: AsyncConnectionPool


@asynccontextmanager
async def open_console_resources(settings: Settings) -> AsyncIterator[ConsoleResources]:
    pool = await open_pool(settings)
    try:
        # Fail at start, with the reason, when the console's database role is missing.
        async with tenant_scope(pool, "-"):
            pass
        yield ConsoleResources(pool=pool)
    finally:
        await pool.close()
