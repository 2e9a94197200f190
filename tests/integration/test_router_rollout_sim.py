"""Model rollout and rollback (issue 14.2) on simulated vLLM replicas (bench/vllm_sim,
`--strict-model`: a request naming another model than the served one gets 404, as from
vLLM) under a steady load through the router: traffic shifts v1 → v2 in steps
(0 → 10 → 50 → 100 %) and back, with 0 failed requests, each step's shares following the
weights and every usage row naming the version that served it. Needs only the tokenizer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from psycopg_pool import AsyncConnectionPool

from bench.rollout import ListSink, rollout, sims_per_version, versioned_router
from bench.vllm_sim.harness import SimProcess
from pipeline.config import Settings
from pipeline.router import ChatRequest, PoolConfig, Router
from pipeline.router.tokens import counter_for
from pipeline.runtime import tokenizer_dir, usage_writer_for
from tests.integration.test_router_simulator import free_port

pytestmark = pytest.mark.timeout(120)


@pytest_asyncio.fixture
async def sims() -> AsyncIterator[dict[str, SimProcess]]:
    running = await sims_per_version(1)
    try:
        yield running
    finally:
        for sim in running.values():
            sim.stop()


async def test_the_simulator_refuses_another_models_name(sims: dict[str, SimProcess]) -> None:
    """The control: were the router to send v1's name to v2, that request would fail."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        url = sims["v2"].urls[0] + "/chat/completions"
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        assert (await client.post(url, json={**body, "model": "v1"})).status_code == 404
        assert (await client.post(url, json={**body, "model": "v2"})).status_code == 200


async def test_rollout_and_rollback_under_load(sims: dict[str, SimProcess]) -> None:
    sink = ListSink()
    router = versioned_router(sims, sink)
    models = {url: v for v, sim in sims.items() for url in sim.urls}
    try:
        result = await rollout(router, models, sink, step_s=2.0, rate=30.0)
    finally:
        await router.close()
    assert result.failures == {}
    assert result.rows == result.requests == 300
    assert result.wrong_model_rows == 0
    for step in result.steps:
        assert sum(step.served.values()) >= 40, step
        assert step.within_tolerance(), step
    # Before the rollout and after the rollback, v1 alone; at 100 %, v2 alone.
    assert [set(s.served) for s in result.steps] == [
        {"v1"}, {"v1", "v2"}, {"v1", "v2"}, {"v2"}, {"v1"}]
    assert router.traffic_split("default") == {"v1": 100.0, "v2": 0.0}


async def test_a_version_without_a_live_replica_falls_back_to_the_others(
        sims: dict[str, SimProcess]) -> None:
    """A new version that does not answer at all costs retries, not failed requests."""
    sink = ListSink()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    v1 = sims["v1"].urls[0]
    router = Router(model_name="v1", counter=counter_for(tokenizer_dir(Settings())),
                    usage=sink, connect_timeout_s=1.0, request_timeout_s=10.0,
                    pools={"default": PoolConfig(endpoints=[v1, dead],
                                                 models={v1: "v1", dead: "v3"},
                                                 traffic_split={"v1": 50, "v3": 50})})
    try:
        answers = await asyncio.gather(*(router.complete(ChatRequest(
            tenant_id="t", messages=[{"role": "user", "content": f"alert {n}"}],
            max_tokens=4)) for n in range(30)))
        router.set_traffic_split("default", {"v1": 100})  # the rollback
        with pytest.raises(ValueError, match="weight > 0"):
            router.set_traffic_split("default", {"v1": 0})
        with pytest.raises(ValueError, match="no pool"):
            router.set_traffic_split("other", {"v1": 1})
    finally:
        await router.close()
    assert {a.replica for a in answers} == {v1}
    assert {e.model_name for e in sink.events} == {"v1"}
    assert len(sink.events) == 30


async def test_the_usage_table_names_the_version_each_request_was_served_by(
        sims: dict[str, SimProcess], settings: Settings, db: AsyncConnectionPool,
        tenant: str) -> None:
    """Through the real usage writer into PostgreSQL, at a 50/50 split."""
    writer = usage_writer_for(settings, db)
    writer.start()
    router = versioned_router(sims, writer)  # type: ignore[arg-type]
    router.set_traffic_split("default", {"v1": 50, "v2": 50})
    who = f"{tenant}-rollout"
    try:
        answers = await asyncio.gather(*(router.complete(ChatRequest(
            tenant_id=who, messages=[{"role": "user", "content": f"alert {n}"}],
            max_tokens=4)) for n in range(40)))
    finally:
        await router.close()
        await writer.close()
    models = {url: v for v, sim in sims.items() for url in sim.urls}
    async with db.connection() as conn:
        rows = await (await conn.execute(
            "SELECT request_id, model_name, replica, status_code FROM llm_usage_events "
            "WHERE tenant_id = %s", (who,))).fetchall()
    assert sorted(r[0] for r in rows) == sorted(a.request_id for a in answers)
    assert all(status == 200 and model == models[replica]
               for _, model, replica, status in rows), (rows, models)
    assert {r[1] for r in rows} == {"v1", "v2"}
