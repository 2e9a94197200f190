"""How the one producer path places a call's alerts on the real broker: spread over every
partition (live ingest: a request reaches all consumers at once), or the whole call on one
partition, the next call on the next (backfill: one record batch, one stored object, per
chunk) — compressed with zstd as the backfill sends them, and read back by a consumer."""

from __future__ import annotations

import json
import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.config import Settings
from pipeline.kafka.admin import ensure_topics
from pipeline.kafka.producer import open_alert_sink

pytestmark = pytest.mark.integration
CALLS, PER_CALL = 6, 30


async def partitions_of_calls(settings: Settings, topic: str) -> dict[int, set[int]]:
    """call number → the partitions its alerts are on (read until every alert is back)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    placed: dict[int, set[int]] = defaultdict(set)
    seen = 0
    try:
        deadline = time.monotonic() + 60
        while seen < CALLS * PER_CALL and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    placed[json.loads(record.value)["call"]].add(record.partition)
                    seen += 1
    finally:
        await consumer.stop()
    assert seen == CALLS * PER_CALL
    return placed


@pytest.mark.parametrize("spread", [True, False])
async def test_a_call_is_spread_or_kept_on_one_partition(settings: Settings, spread: bool,
                                                         ) -> None:
    topic = f"{settings.kafka.topics.backfill}.placement-{int(spread)}"
    topics = settings.kafka.topics.model_copy(update={"backfill": topic})
    config = settings.model_copy(update={
        "kafka": settings.kafka.model_copy(update={"topics": topics})})
    await ensure_topics(config)
    partitions = config.kafka.topics.partitions
    async with open_alert_sink(config, topic, priority="batch", spread=spread,
                               compression_type="zstd") as sink:
        for call in range(CALLS):
            await sink.publish("acme", [json.dumps({"call": call, "n": n}).encode()
                                        for n in range(PER_CALL)])
    placed = await partitions_of_calls(config, topic)
    if spread:
        assert all(len(on) == partitions for on in placed.values())
    else:
        assert all(len(on) == 1 for on in placed.values())
        # round robin: consecutive calls on consecutive partitions, every one used
        order = [next(iter(placed[call])) for call in range(CALLS)]
        assert len(set(order[:partitions])) == partitions
        assert order[partitions:] == order[:CALLS - partitions]
