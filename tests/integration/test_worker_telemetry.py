"""A real worker's telemetry on the embedded stack.

/metrics: a normalize worker (`run_worker`, health server on) counts what it consumed,
passed on and dead-lettered (by reason class), its batch latency and its lag per
partition. Traces: one alert published with the producer's span goes through all four
stages in this process (`run_worker(settings, STAGES, stop)`, LLM on a private vLLM
simulator) and comes out as one trace: publish → normalize → embed → retrieve → explain →
llm.dispatch, each the parent of the next (the context travels in the Kafka headers).
Both on topics and consumer groups of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import ReadableSpan
from prometheus_client import REGISTRY
from psycopg_pool import AsyncConnectionPool

from bench.common import varied_alerts
from bench.config_errors import closed_port
from pipeline.analysis.runbook_loader import load_runbooks
from pipeline.config import Settings, WorkerSettings
from pipeline.kafka.admin import ensure_topics
from pipeline.kafka.producer import alert_producer, settings_sink
from pipeline.runtime import STAGES
from pipeline.worker import run_worker
from tests.integration.conftest import ROOT, session_settings, wait_for
from tests.integration.simulated_llm import llm_on_simulator
from tests.integration.test_explain_outage import SimProcess
from tests.integration.test_router_simulator import free_port
from tests.span_capture import captured_spans

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}\{{(.*)\}} (\S+)", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


async def publish(config: Settings, tenant: str, alerts: list[bytes]) -> None:
    producer = alert_producer(config.kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        sink = settings_sink(config, producer, config.kafka.topics.raw, priority="live")
        await sink.publish(tenant, alerts)
    finally:
        await producer.stop()


async def test_normalize_worker_serves_its_metrics(settings: Settings, run_id: str) -> None:
    port = closed_port()
    own = session_settings(f"{run_id}wm")
    config = own.model_copy(update={"worker": WorkerSettings(health_port=port)})
    raw = config.kafka.topics.raw
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(config, ["normalize"], stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     timeout=5) as client:
            async def ready() -> bool:
                with contextlib.suppress(httpx.TransportError):
                    return (await client.get("/readyz")).status_code == 200
                return False

            assert await wait_for(ready, timeout_s=120, interval_s=0.5)
            before = (await client.get("/metrics")).text
            good = varied_alerts(3, seed=5)
            await publish(config, f"wm-{run_id}", [*good, b'{"not": "an alert"'])
            labels = {"stage": "normalize", "lane": "live"}

            async def scraped() -> str | None:
                text = (await client.get("/metrics")).text
                done = (metric(text, "secanalyst_stage_records_in_total", **labels)
                        - metric(before, "secanalyst_stage_records_in_total", **labels))
                return text if done >= 4 else None

            after = await wait_for(scraped, timeout_s=120, interval_s=0.5)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 60)
    assert after is not None, "normalize never counted the 4 records"

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("secanalyst_stage_records_in_total", **labels) == 4
    assert delta("secanalyst_stage_records_out_total", **labels) == 3
    assert delta("secanalyst_stage_dead_letters_total", stage="normalize",
                 reason="invalid_json") == 1
    assert delta("secanalyst_stage_batch_seconds_count", outcome="committed", **labels) >= 1
    lags = [metric(after, "secanalyst_stage_consumer_lag", topic=raw, partition=str(p),
                   **labels) for p in range(config.kafka.topics.partitions)]
    assert f'topic="{raw}"' in after and all(lag == 0 for lag in lags), lags


@pytest_asyncio.fixture
async def traced_settings(settings: Settings, run_id: str) -> AsyncIterator[Settings]:
    """Topics and groups of this test's own; the LLM a private simulator."""
    sim = SimProcess(free_port())
    await sim.start()
    try:
        yield llm_on_simulator(session_settings(f"{run_id}tr"), sim.port)
    finally:
        sim.kill()


async def test_one_alert_is_one_trace_across_every_topic_hop(
        traced_settings: Settings, db: AsyncConnectionPool, run_id: str) -> None:
    config = traced_settings
    tenant = f"tr-{run_id}"
    await ensure_topics(config)
    await load_runbooks(config, ROOT / "runbooks")
    with captured_spans() as exporter:
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(config, STAGES, stop))
        try:
            await publish(config, tenant, varied_alerts(1, seed=41))
            [published] = [s for s in exporter.get_finished_spans() if s.name == "publish"]
            assert published.context is not None
            trace_id = published.context.trace_id

            async def whole_trace() -> dict[str, list[ReadableSpan]] | None:
                assert not worker.done(), f"the worker died: {worker.exception()!r}"
                spans: dict[str, list[ReadableSpan]] = {}
                for span in exporter.get_finished_spans():
                    if span.context is not None and span.context.trace_id == trace_id:
                        spans.setdefault(span.name, []).append(span)
                return spans if "explain" in spans else None

            found = await wait_for(whole_trace, timeout_s=300, interval_s=1.0)
        finally:
            stop.set()
            await asyncio.wait_for(worker, 60)
    assert found is not None, "no explain span in the alert's trace"
    async with db.connection() as conn:
        verdicts = await (await conn.execute(
            "SELECT count(*) FROM verdicts WHERE tenant_id = %s", (tenant,))).fetchone()
    assert verdicts == (1,)
    # The worker's registry (its /metrics) has the LLM call's tokens, from the router.
    output_tokens = sum(sample.value for family in REGISTRY.collect()
                        for sample in family.samples
                        if sample.name == "secanalyst_llm_tokens_total"
                        and sample.labels.get("tenant") == tenant
                        and sample.labels.get("kind") == "output")
    assert output_tokens > 0
    chain = ["publish", "normalize", "embed", "retrieve", "explain"]
    assert all(len(found.get(name, [])) == 1 for name in chain), {
        name: len(spans) for name, spans in found.items()}
    assert found.get("llm.dispatch"), f"no LLM call in the trace: {sorted(found)}"
    for parent_name, child_name in itertools.pairwise(chain):
        parent, child = found[parent_name][0], found[child_name][0]
        assert parent.context is not None and child.parent is not None
        assert child.parent.span_id == parent.context.span_id, (parent_name, child_name)
    explain = found["explain"][0]
    assert explain.context is not None
    assert all(call.parent is not None and call.parent.span_id == explain.context.span_id
               for call in found["llm.dispatch"])
