"""The explain stage through a model-server outage, on the real database and broker with a
private simulated vLLM (bench/vllm_sim) that this test stops and starts on its own port —
never the shared embedded vLLM.

Killed mid-batch, the server is gone for seconds: the stage holds the alerts it has not
finished (circuit open, a few probes, not a call per alert per retry), dead-letters none,
and once the server is back finishes the same batch — every alert published exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from bench.common import varied_alerts
from pipeline.analysis.normalize import normalize
from pipeline.config import RetrievalSettings, Settings, StormSettings
from pipeline.kafka.admin import ensure_topics
from pipeline.kafka.messaging import Record
from pipeline.router import PoolConfig, Router
from pipeline.router.tokens import counter_for
from pipeline.runtime import tokenizer_dir
from pipeline.stages.common import headers_for, message_key
from pipeline.stages.explain import ExplainOptions, ExplainStage
from pipeline.worker import BrokerPublisher, build_broker
from schemas.messages import EnrichedAlert
from tests.integration.conftest import wait_for
from tests.integration.kafka_helpers import read_topic
from tests.integration.test_router_simulator import ListSink, free_port

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ALERTS = 12


class SimProcess:
    """The simulator on a fixed port, so it can come back at the same address."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.vllm_sim", "--port", str(self.port),
             "--itl-ms", "25", "--output-tokens", "12"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        async with httpx.AsyncClient(timeout=1.0) as client:
            for _ in range(300):
                try:
                    if (await client.get(f"http://127.0.0.1:{self.port}/health")).is_success:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"simulator on {self.port} did not start")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)


@pytest.fixture
def sim() -> Iterator[SimProcess]:
    process = SimProcess(free_port())
    yield process
    process.kill()


def enriched_records(tenant: str, topic: str) -> list[Record]:
    records = []
    for offset, raw in enumerate(varied_alerts(ALERTS, seed=23)):
        alert = normalize(raw, tenant_id=tenant)
        value = EnrichedAlert(alert=alert).model_dump_json().encode()
        records.append(Record(topic=topic, partition=0, offset=offset,
                              key=message_key(alert).encode(), value=value,
                              headers=headers_for(alert)))
    return records


async def verdict_count(db: AsyncConnectionPool, tenant: str) -> int:
    async with db.connection() as conn:
        cur = await conn.execute("SELECT count(*) FROM verdicts WHERE tenant_id = %s",
                                 (tenant,))
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def test_an_outage_mid_batch_pauses_explain_without_dead_letters_or_repeats(
        settings: Settings, db: AsyncConnectionPool, sim: SimProcess) -> None:
    await ensure_topics(settings)
    topics = settings.kafka.topics
    tenant = f"outage-{settings.kafka.group_prefix}"
    await sim.start()
    usage = ListSink()
    router = Router(model_name="sim-model", counter=counter_for(tokenizer_dir(Settings())),
                    usage=usage, connect_timeout_s=1.0, request_timeout_s=10.0,
                    pools={"default": PoolConfig(endpoints=[f"http://127.0.0.1:{sim.port}/v1"],
                                                 max_context_tokens=8192)})
    for replica in router._pools[0].replicas:
        replica.circuit.cooldown_s = 1.0  # the router's own per-replica breaker
    broker = build_broker(settings)
    await broker.connect()
    stage = ExplainStage(
        publisher=BrokerPublisher(broker), pool=db, router=router,
        output_topic=topics.verdicts, dlq_topic=topics.dlq,
        options=ExplainOptions(max_tokens=32, temperature=0.0, concurrency=2, extra_body={},
                               retrieval=RetrievalSettings(),
                               storm=StormSettings(enabled=False)))
    try:
        handling = asyncio.create_task(stage.handle(enriched_records(tenant, topics.enriched)))

        async def some_done() -> bool:
            return await verdict_count(db, tenant) >= 3

        assert await wait_for(some_done, timeout_s=120, interval_s=0.05)
        sim.kill()
        before_outage = len(usage.events)
        await asyncio.sleep(8)
        assert not handling.done(), "the stage waits out the outage inside the batch"
        assert stage.circuit.outages >= 1
        # The circuit holds the calls: 1 + 2 + 4 s of back-off are a handful of probes
        # (plus the calls in flight at the kill), not one call per alert per retry.
        refused = len(usage.events) - before_outage
        assert refused <= 8, f"{refused} calls while the server was down"
        done_during_outage = await verdict_count(db, tenant)
        assert done_during_outage < ALERTS

        await sim.start()
        await asyncio.wait_for(handling, 180)
    finally:
        await router.close()
        await broker.stop()

    assert await verdict_count(db, tenant) == ALERTS
    published = [m for m in await read_topic(settings, topics.verdicts, until=10**9,
                                             timeout_s=6)
                 if m["_headers"].get("tenant_id") == tenant]
    ids = [m["alert_id"] for m in published]
    assert len(ids) == ALERTS and len(set(ids)) == ALERTS  # each verdict published once
    dead = [m for m in await read_topic(settings, topics.dlq, until=10**9, timeout_s=4)
            if m["_headers"].get("tenant_id") == tenant]
    assert dead == []
