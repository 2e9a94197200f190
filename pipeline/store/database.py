"""The connection pool, opened once per process and injected where it is needed."""

from __future__ import annotations

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_fixed

from pipeline.config import Settings


async def _configure(conn: AsyncConnection) -> None:
    from pgvector.psycopg import register_vector_async

    await register_vector_async(conn)


async def open_pool(settings: Settings, *, wait_s: float = 30.0) -> AsyncConnectionPool:
    """Open the pool, waiting for the database to accept connections (it may be starting)."""
    pool = AsyncConnectionPool(
        settings.database_url,
        min_size=settings.database.pool_min_size,
        max_size=settings.database.pool_max_size,
        configure=_configure,
        open=False,
        kwargs={"autocommit": False},
    )
    # Wait for the server with plain connections: a pool that fails to open is closed for
    # good, so it is opened once, when the server answers.
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(wait_s), wait=wait_fixed(0.5),
        retry=retry_if_exception_type(psycopg.OperationalError), reraise=True,
    ):
        with attempt:
            conn = await AsyncConnection.connect(settings.database_url, connect_timeout=5)
            await conn.close()
    await pool.open(wait=True, timeout=wait_s)
    return pool
