"""The worker's start-up schema check on the real PostgreSQL: a migrated database has
nothing pending; a database where the migrations never ran (here: a search path of an
empty schema) has every version pending and the worker says what to run."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from pipeline import worker
from pipeline.config import Settings
from pipeline.store.migrate import available_migrations, pending_migrations
from pipeline.worker import warn_if_schema_behind
from tests.log_recorder import LogRecorder


@pytest_asyncio.fixture
async def unmigrated(settings: Settings) -> AsyncIterator[AsyncConnectionPool]:
    schema = f"empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    pool = AsyncConnectionPool(settings.database_url, min_size=1, max_size=1, open=False,
                               kwargs={"options": f"-c search_path={schema}"})
    await pool.open(wait=True)
    try:
        yield pool
    finally:
        await pool.close()
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


async def test_a_migrated_database_has_nothing_pending(db: AsyncConnectionPool) -> None:
    assert await pending_migrations(db) == []


async def test_an_unmigrated_database_has_every_version_pending_and_the_worker_says_so(
        unmigrated: AsyncConnectionPool, monkeypatch: pytest.MonkeyPatch) -> None:
    every = [version for version, _ in available_migrations()]
    assert len(every) >= 12 and await pending_migrations(unmigrated) == every

    class Runtime:  # what warn_if_schema_behind reads of the worker's runtime
        pool = unmigrated

    logs = LogRecorder()
    monkeypatch.setattr(worker, "log", logs)
    assert await warn_if_schema_behind(Runtime()) == every  # type: ignore[arg-type]
    warning = next(e for e in logs.events if e["event"] == "database_schema_behind")
    assert warning["pending"] == every and "secanalyst db migrate" in warning["hint"]
