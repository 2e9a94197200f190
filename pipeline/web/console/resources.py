"""What the console opens once at start (in the app's lifespan) and closes at stop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import psycopg
from psycopg_pool import AsyncConnectionPool

from pipeline.config import Settings
from pipeline.store.database import open_pool
from pipeline.store.tenant_scope import tenant_scope


@dataclass(frozen=True)
class ConsoleResources:
    pool: AsyncConnectionPool


@asynccontextmanager
async def open_console_resources(settings: Settings) -> AsyncIterator[ConsoleResources]:
    pool = await open_pool(settings)
    try:
        await ensure_console_role(pool)
        yield ConsoleResources(pool=pool)
    finally:
        await pool.close()


async def ensure_console_role(pool: AsyncConnectionPool) -> None:
    """Re-apply the console role's grants (idempotent; needs the owner, skipped when the
    console connects as another user), then fail at start, with the reason, when the
    role still cannot be used."""
    async with pool.connection() as conn:
        try:
            await conn.execute("SELECT console_grant()")
            await conn.commit()
        except psycopg.errors.InsufficientPrivilege:
            await conn.rollback()
    async with tenant_scope(pool, "-") as conn:
        await conn.execute("SELECT count(*) FROM verdicts")
