"""Replicas that come and go, on simulated vLLM replicas (bench/vllm_sim) under a steady
load through the router: a replica added to the discovery source gets traffic within
seconds; one removed from it drains with 0 failed requests. Needs only the tokenizer."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from bench.discovery import steady_load
from pipeline.config import Settings
from pipeline.router import PoolConfig, Router
from pipeline.router.discovery import StaticDiscovery
from pipeline.router.tokens import TokenCounter, counter_for
from pipeline.runtime import tokenizer_dir
from tests.integration.test_router_simulator import ListSink, Sim

pytestmark = pytest.mark.timeout(120)


@pytest_asyncio.fixture
async def two_sims() -> AsyncIterator[tuple[Sim, Sim]]:
    sims = (Sim("--itl-ms", "20", "--output-tokens", "10"),
            Sim("--itl-ms", "20", "--output-tokens", "10"))
    try:
        await asyncio.gather(*(s.ready() for s in sims))
        yield sims
    finally:
        for sim in sims:
            sim.kill()


async def test_replicas_added_and_removed_under_load(two_sims: tuple[Sim, Sim]) -> None:
    first, second = two_sims
    counter: TokenCounter = counter_for(tokenizer_dir(Settings()))
    source = StaticDiscovery([first.url])
    sink = ListSink()
    router = Router(model_name="sim-model", counter=counter, usage=sink,
                    pools={"default": PoolConfig(endpoints=[first.url], max_context_tokens=8192,
                                                 refresh_s=0.2)},
                    discovery={"default": source}, connect_timeout_s=1.0,
                    request_timeout_s=10.0)
    started = time.monotonic()
    try:
        running = asyncio.create_task(steady_load(router, 200, 50.0))
        await asyncio.sleep(1.0)
        source.set([first.url, second.url])  # the autoscaler adds a replica
        added = time.monotonic()
        await asyncio.sleep(1.5)
        source.set([second.url])  # the first one is being drained
        removed = time.monotonic()
        load = await running
        drained = first.url not in router._fleet.clients
        await asyncio.sleep(0.5)
        first.kill()  # terminated after its grace period: nothing must still need it
    finally:
        await router.close()
    assert load.failures == Counter()
    served = load.served
    assert len(served) == 200
    # Answered before the replica was added: the only replica there was served it (a
    # request merely *sent* before may wait in a loaded event loop and be dispatched after).
    before = [r for t, r in load.answered if t < added]
    assert before and set(before) == {first.url}
    # Within seconds of being added, the new replica takes a fair share of the traffic.
    soon = [r for t, r in served if added + 1.0 <= t < removed]
    assert soon.count(second.url) >= len(soon) // 4, soon
    # Once the refresher saw it gone, no new request went to the drained replica, and
    # its client was closed once its requests had finished.
    after = [r for t, r in served if t >= removed + 0.3]
    assert after and set(after) == {second.url}
    assert drained
    assert all(e.status_code == 200 for e in sink.events)
    assert time.monotonic() - started < 30


async def test_a_dns_pool_routes_to_the_addresses_of_its_service_name(
        two_sims: tuple[Sim, Sim]) -> None:
    """`discovery: dns` from config, resolved by the event loop's real resolver: the
    pool's replica is the address behind the name, found before the first request."""
    sim = two_sims[0]
    router = Router(model_name="sim-model", counter=counter_for(tokenizer_dir(Settings())),
                    usage=ListSink(),
                    pools={"default": PoolConfig(endpoints=[f"http://localhost:{sim.port}/v1"],
                                                 discovery="dns", refresh_s=0.2,
                                                 max_context_tokens=8192)},
                    connect_timeout_s=1.0, request_timeout_s=10.0)
    try:
        load = await steady_load(router, 10, 50.0)
        ready, why = await router.readiness()
    finally:
        await router.close()
    assert load.failures == Counter()
    assert {replica for _, replica in load.served} == {sim.url}  # http://127.0.0.1:port/v1
    assert ready, why
