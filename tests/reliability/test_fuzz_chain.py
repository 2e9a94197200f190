"""Fuzzed alerts through the producer path and the normalize stage on the real broker and
database: every alert ends on alerts.normalized or on alerts.dlq with a reason, none is
lost, and the stage keeps running (no stall).

Each alert travels under a tenant of its own (the tenant header), which is how its
outcome is found again on either topic. Alerts over `ingest.max_alert_bytes` take the
screened producer path (`send_lines`: dead-lettered by the producer); the rest are
produced as they are, so the stage meets every hostile kind. The stage runs alone
(`run_worker(settings, ["normalize"], stop)`) on topics and a group of this test's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer
from hypothesis import Phase, given, settings

from pipeline.alert_sink import alert_producer, settings_sink
from pipeline.config import Settings
from pipeline.ingest import send_lines
from pipeline.kafka_admin import ensure_topics
from pipeline.worker import run_worker
from tests.integration.conftest import session_settings
from tests.reliability.conftest import full_size
from tests.reliability.fuzz_alerts import alert_bytes
from tests.reliability.report import report_row
from tests.reliability.test_fuzz_alerts import FUZZ

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


def draw_alerts(n: int) -> list[bytes]:
    found: list[bytes] = []

    @settings(FUZZ, max_examples=n, phases=[Phase.generate])
    @given(alert_bytes())
    def collect(data: bytes) -> None:
        found.append(data)

    collect()
    return found[:n]


async def outcomes(config: Settings, tenants: set[str], *, timeout_s: float,
                   ) -> tuple[dict[str, list[dict[str, object]]], int]:
    """Each tenant's messages on alerts.normalized and alerts.dlq (read from the start,
    until every tenant has one or the timeout), and how many messages were read."""
    topics = config.kafka.topics
    consumer = AIOKafkaConsumer(topics.normalized, topics.dlq, group_id=None,
                                bootstrap_servers=config.kafka_bootstrap,
                                auto_offset_reset="earliest", fetch_max_bytes=16 << 20,
                                max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    found: dict[str, list[dict[str, object]]] = {}
    read = 0
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not tenants <= found.keys() and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    read += 1
                    message = json.loads(record.value)
                    message["_topic"] = record.topic
                    found.setdefault(str(message.get("tenant_id")), []).append(message)
    finally:
        await consumer.stop()
    return found, read


async def test_fuzzed_alerts_are_normalized_or_dead_lettered_on_the_real_broker(
        settings: Settings, run_id: str) -> None:
    n = full_size(200, 1_000)
    alerts = draw_alerts(n)
    config = session_settings(f"{run_id}fz")
    await ensure_topics(config)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(config, ["normalize"], stop))
    producer = alert_producer(config.kafka_bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    tenants = [f"fz-{run_id}-{i}" for i in range(len(alerts))]
    try:
        sink = settings_sink(config, producer, config.kafka.topics.raw, priority="live")
        for number, (tenant, data) in enumerate(zip(tenants, alerts, strict=True), start=1):
            if len(data) > sink.max_alert_bytes:  # the producer refuses it: screened path
                await send_lines(sink, [(number, data)], tenant_id=tenant)
            else:
                await sink.publish(tenant, [data])
        found, read = await outcomes(config, set(tenants), timeout_s=full_size(300, 900))
        assert not worker.done(), worker.exception()
    finally:
        await producer.stop()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 60)

    tally: Counter[str] = Counter()
    for tenant in tenants:
        messages = found.get(tenant, [])
        if not messages:
            tally["lost"] += 1
            continue
        if len(messages) > 1:
            tally["delivered more than once"] += 1
        first = messages[0]
        if first["_topic"] == config.kafka.topics.normalized:
            tally["normalized"] += 1
        else:
            assert first.get("reason"), f"a dead letter without a reason: {first}"
            tally[f"dead-lettered by {first['stage']}"] += 1
    print(f"whole chain: {len(alerts)} alerts, {read} messages read: {dict(tally)}")
    report_row("fuzz: whole chain (producer → normalize stage, real broker + database)",
               {"alerts": len(alerts), **dict(tally.most_common())})
    assert len(alerts) == n and tally["lost"] == 0, dict(tally)
    assert tally["normalized"] > 0 and read >= n
