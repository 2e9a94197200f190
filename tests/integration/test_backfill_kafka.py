"""Backfill into the real broker through the one producer path (record batches, chunks in
flight): stopped halfway and resumed, every alert of the gzip archive is on the topic
exactly once, with its tenant header, spread over the topic's partitions."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from bench.common import varied_alerts
from pipeline.config import IngestSettings, Settings
from pipeline.kafka.admin import ensure_topics
from pipeline.kafka.messaging import TENANT_HEADER
from pipeline.sources.backfill.checkpoint import CheckpointStore
from pipeline.sources.backfill.command import backfill_sink, write_gzip_lines
from pipeline.sources.backfill.filters import AlertFilter
from pipeline.sources.backfill.ratelimit import TokenBucket
from pipeline.sources.backfill.runner import Backfill

pytestmark = pytest.mark.integration
ALERTS = 3000


async def read_back(settings: Settings, topic: str) -> list[tuple[int, str, bytes]]:
    """(partition, alert id, tenant header) of every message, read until quiet."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    found: list[tuple[int, str, bytes]] = []
    try:
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 3 or not found:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batches.values():
                for r in records:
                    found.append((r.partition, json.loads(r.value)["id"],
                                  dict(r.headers)[TENANT_HEADER]))
                    quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return found


async def test_stopped_and_resumed_backfill_puts_each_alert_on_kafka_once(
        settings: Settings, tenant: str, tmp_path: Path) -> None:
    # A backfill topic of its own: the session's stage consumers follow the session's
    # topics and would explain all 3,000 alerts, holding the LLM from the tests after this.
    topics = settings.kafka.topics.model_copy(
        update={"backfill": f"{settings.kafka.topics.backfill}.replay-only"})
    config = settings.model_copy(update={
        "state_dir": tmp_path, "ingest": IngestSettings(backfill_batch_bytes=65_536),
        "kafka": settings.kafka.model_copy(update={"topics": topics})})
    await ensure_topics(config)
    archive = tmp_path / "archive.json.gz"
    write_gzip_lines(archive, varied_alerts(ALERTS, seed=15))
    stop = asyncio.Event()

    class StopHalfway:
        def advance(self, raw_bytes: int, alerts: int) -> None:
            self.seen = getattr(self, "seen", 0) + alerts
            if self.seen >= ALERTS // 2:
                stop.set()

    def job(stop_event: asyncio.Event | None) -> Backfill:
        return Backfill(sink, CheckpointStore(tmp_path / "cp"), tenant_id=tenant,
                        alert_filter=AlertFilter(), bucket=TokenBucket(0), chunk_size=200,
                        stop=stop_event, max_in_flight=4)

    async with backfill_sink(config) as sink:
        first = await job(stop).run([archive], StopHalfway())
        second = await job(None).run([archive])
    assert first.interrupted and 0 < first.total("published") < ALERTS
    assert not second.interrupted and second.total("published") == ALERTS
    found = await read_back(config, config.kafka.topics.backfill)
    ids = [alert_id for _, alert_id, _ in found]
    assert len(ids) == ALERTS and len(set(ids)) == ALERTS  # 0 lost, 0 duplicated
    assert {header for _, _, header in found} == {tenant.encode()}
    assert len({partition for partition, _, _ in found}) == config.kafka.topics.partitions
