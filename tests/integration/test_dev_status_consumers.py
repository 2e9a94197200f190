"""`secanalyst dev status` reports each stage's consumers and lag, read from the real
broker — and `dev up --consumers`' managed worker shows up there and stops when told.

Own topics and groups (never the shared stack's), so the figures are this test's: records
produced in one batch each (Tansu's ListOffsets would count such a batch as one record),
some consumed and committed by a consumer that stays in the normalize group."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from pipeline.config import Settings
from pipeline.devstack.consumers import ManagedConsumers
from pipeline.kafka.admin import ensure_topics
from pipeline.kafka.lag import stage_lags
from tests.integration.conftest import session_settings

pytestmark = pytest.mark.integration
LIVE, BACKFILL, CONSUMED = 10, 3, 4


@pytest.fixture
def own(settings: Settings) -> Settings:  # `settings`: the shared stack is up
    return session_settings(f"lag{uuid.uuid4().hex[:8]}")


def env_for(settings: Settings) -> dict[str, str]:
    """The variables that give a `secanalyst` subprocess this test's topics and groups."""
    env = {"SECANALYST_KAFKA__GROUP_PREFIX": settings.kafka.group_prefix}
    for name, topic in settings.kafka.topics.model_dump().items():
        if isinstance(topic, str):
            env[f"SECANALYST_KAFKA__TOPICS__{name.upper()}"] = topic
    return env


async def produce(settings: Settings, topic: str, count: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=100)
    await producer.start()
    try:
        sent = [await producer.send(topic, b'{"n": %d}' % i, partition=0) for i in range(count)]
        await asyncio.gather(*sent)  # one batch: what Tansu's ListOffsets undercounts
    finally:
        await producer.stop()


@pytest_asyncio.fixture
async def normalize_member(own: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A member of the normalize group that consumed and committed CONSUMED records."""
    await ensure_topics(own)
    topics = own.kafka.topics
    await produce(own, topics.raw, LIVE)
    await produce(own, topics.backfill, BACKFILL)
    consumer = AIOKafkaConsumer(topics.raw, bootstrap_servers=own.kafka_bootstrap,
                                group_id=f"{own.kafka.group_prefix}-normalize",
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    taken = 0
    while taken < CONSUMED:
        batch = await consumer.getmany(timeout_ms=10_000, max_records=CONSUMED - taken)
        assert batch, "the consumer got nothing from its topic"
        for tp, records in batch.items():
            await consumer.commit({tp: records[-1].offset + 1})
            taken += len(records)
    yield consumer
    await consumer.stop()


async def test_stage_lags_count_members_and_every_record_of_a_batch(
        own: Settings, normalize_member: AIOKafkaConsumer) -> None:
    lags = {lag.stage: lag for lag in await stage_lags(own)}
    assert list(lags) == ["normalize", "embed", "retrieve", "explain"]
    normalize = lags["normalize"]
    assert (normalize.live.members, normalize.live.lag) == (1, LIVE - CONSUMED)
    assert (normalize.batch.members, normalize.batch.lag) == (0, BACKFILL)  # never committed
    assert all((lags[s].live.members, lags[s].live.lag) == (0, 0)
               for s in ("embed", "retrieve", "explain"))


async def test_dev_status_prints_consumers_and_lag(
        own: Settings, normalize_member: AIOKafkaConsumer) -> None:
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "pipeline.cli.app", "dev", "status"],
        env={**os.environ, **env_for(own), "COLUMNS": "200"}, capture_output=True, text=True,
        timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in done.stdout.splitlines() if line.count("│") == 6}
    topics = own.kafka.topics
    assert rows["normalize"] == [f"{topics.raw} / {topics.backfill}", "1 / 0",
                                 str(LIVE - CONSUMED), str(BACKFILL)]
    assert rows["embed"][1:] == ["0 / 0", "0", "0"]
    assert "Some stage has no consumer" in done.stdout


@pytest.fixture
def managed(own: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
            ) -> Iterator[ManagedConsumers]:
    for name, value in env_for(own).items():
        monkeypatch.setenv(name, value)  # inherited by the managed `secanalyst run`
    consumers = ManagedConsumers(tmp_path / "state")
    yield consumers
    consumers.stop()


async def test_managed_consumers_join_every_group_and_stop_on_down(
        own: Settings, managed: ManagedConsumers) -> None:
    await asyncio.to_thread(managed.start, timeout_s=240)
    assert managed.running() and managed.ready()
    lags = await stage_lags(own)
    assert all((lag.live.members, lag.batch.members) == (1, 1) for lag in lags), lags
    assert managed.stop() and not managed.running() and not managed.started()
