"""The real embedded stack, started once per test session (idempotent: reused when up).

Each session gets its own topics, consumer groups and tenant, so it never sees another
run's messages, and one worker process (all four stages) runs for the whole session.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from pipeline.analysis.runbook_loader import load_runbooks
from pipeline.config import KafkaSettings, Settings, Topics
from pipeline.devstack import stack
from pipeline.kafka.admin import delete_topics
from pipeline.runtime import STAGES
from pipeline.store.database import open_pool
from pipeline.store.migrate import migrate
from pipeline.worker import run_worker

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.integration


def session_settings(run_id: str) -> Settings:
    topics = Topics.model_validate({name: f"{run_id}.{value}" for name, value
                                    in Topics().model_dump().items() if isinstance(value, str)})
    return Settings(kafka=KafkaSettings(group_prefix=f"test-{run_id}", topics=topics))


@pytest.fixture(scope="session")
def run_id() -> str:
    return f"it{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def settings(run_id: str) -> Iterator[Settings]:
    configured = session_settings(run_id)
    services = stack.embedded_services(configured)
    already_up = {s.name for s in services if s.running()}
    stack.up(configured)
    migrate(configured.database_url)
    yield configured
    # Leave the machine as we found it: the session's own topics deleted (the broker may be
    # down after a test that stopped it: nothing to do then), and stop only what this
    # session started.
    with contextlib.suppress(Exception):
        asyncio.run(delete_topics(configured))
    for service in reversed(services):
        if service.name not in already_up:
            service.stop()


@pytest.fixture(scope="session")
def tenant(run_id: str) -> str:
    return f"tenant-{run_id}"


@pytest_asyncio.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[AsyncConnectionPool]:
    pool = await open_pool(settings)
    yield pool
    await pool.close()


@pytest_asyncio.fixture(scope="session")
async def worker(settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    await load_runbooks(settings, ROOT / "runbooks")
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(settings, STAGES, stop))
    yield task
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 60)


async def wait_for(check, *, timeout_s: float = 600, interval_s: float = 1.0):
    """Poll an async check until it returns a truthy value; the last value on timeout."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    value = await check()
    while not value and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(interval_s)
        value = await check()
    return value
