"""The router against simulated vLLM replicas (bench/vllm_sim), each its own process on a
free port: failover, circuit breaking, load-aware choice and prefix affinity, over HTTP.
Needs no embedded stack, only the converted model's tokenizer."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from pipeline.config import Settings
from pipeline.router import ChatRequest, PoolConfig, Router
from pipeline.router.engine_stats import EngineStats, EngineStatsScraper, metrics_url
from pipeline.router.scoring import ReplicaPicker
from pipeline.router.tokens import TokenCounter, counter_for
from pipeline.runtime import tokenizer_dir
from schemas.usage import UsageEvent

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.timeout(120)


class ListSink:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> None:
        self.events.append(event)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sim:
    """One simulator replica in its own process."""

    def __init__(self, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.vllm_sim", "--port", str(self.port), *flags],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)})

    async def ready(self) -> None:
        async with httpx.AsyncClient(timeout=1.0) as client:
            for _ in range(200):
                try:
                    if (await client.get(self.url.removesuffix("/v1") + "/health")).is_success:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"simulator on {self.port} did not start")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(5)

    async def stats(self) -> EngineStats:
        async with httpx.AsyncClient(timeout=2.0) as client:
            return EngineStats.from_vllm_scrape((await client.get(metrics_url(self.url))).text)

    async def faults(self, **values: float) -> None:
        async with httpx.AsyncClient(timeout=2.0) as client:
            response = await client.post(self.url.removesuffix("/v1") + "/admin/faults",
                                         json=values)
            response.raise_for_status()


SimFactory = Callable[..., Awaitable[list[Sim]]]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return counter_for(tokenizer_dir(Settings()))


@pytest_asyncio.fixture
async def sims() -> AsyncIterator[SimFactory]:
    started: list[Sim] = []

    async def start(count: int, *flags: str) -> list[Sim]:
        new = [Sim(*flags) for _ in range(count)]
        started.extend(new)
        await asyncio.gather(*(s.ready() for s in new))
        return new

    yield start
    for sim in started:
        sim.kill()


def make_router(counter: TokenCounter, replicas: list[Sim], picker: ReplicaPicker | None = None,
                ) -> tuple[Router, ListSink]:
    sink = ListSink()
    router = Router(model_name="sim-model", counter=counter, usage=sink, picker=picker,
                    pools={"default": PoolConfig(endpoints=[s.url for s in replicas],
                                                 max_context_tokens=8192)},
                    connect_timeout_s=1.0, request_timeout_s=10.0)
    return router, sink


def request(text: str = "hello", max_tokens: int = 8) -> ChatRequest:
    return ChatRequest(tenant_id="t", messages=[{"role": "user", "content": text}],
                       max_tokens=max_tokens)


async def test_failover_when_a_replica_dies_mid_load(counter: TokenCounter,
                                                     sims: SimFactory) -> None:
    replicas = await sims(3, "--itl-ms", "20", "--output-tokens", "10")
    router, sink = make_router(counter, replicas)
    try:
        async def one(n: int) -> str:
            await asyncio.sleep(n * 0.01)
            return (await router.complete(request(f"request {n}"))).replica

        tasks = [asyncio.create_task(one(n)) for n in range(90)]
        await asyncio.sleep(0.4)  # mid-load: some requests are streaming from replica 0
        replicas[0].kill()
        served = Counter(await asyncio.gather(*tasks))
    finally:
        await router.close()
    assert sum(served.values()) == 90  # every request succeeded
    assert served[replicas[1].url] > 0 and served[replicas[2].url] > 0
    assert all(e.status_code == 200 for e in sink.events)
    late = [e for e in sink.events[-30:] if e.replica == replicas[0].url]
    assert not late  # after the kill, nothing more lands on the dead replica


async def test_circuit_opens_on_a_failing_replica_and_recovers(counter: TokenCounter,
                                                              sims: SimFactory) -> None:
    replicas = await sims(2, "--itl-ms", "1")
    bad, good = replicas
    await bad.faults(fail_rate=1.0)
    router, _ = make_router(counter, replicas)
    for replica in router._pools[0].replicas:
        replica.circuit.cooldown_s = 1.0
    breaker = next(r.circuit for r in router._pools[0].replicas if r.url == bad.url)
    try:
        results = [await router.complete(request(f"r{n}")) for n in range(12)]
        assert all(r.replica == good.url for r in results)  # 500s retried on the good one
        assert breaker.opened_at is not None
        await bad.faults(fail_rate=0.0)
        await asyncio.sleep(1.1)  # cooldown: half-open, the next try may go there
        results = [await router.complete(request(f"s{n}")) for n in range(12)]
        assert any(r.replica == bad.url for r in results)
        assert breaker.opened_at is None and breaker.failures == 0
    finally:
        await router.close()


async def test_scorer_prefers_the_less_loaded_replica(counter: TokenCounter,
                                                     sims: SimFactory) -> None:
    replicas = await sims(2, "--max-num-seqs", "2", "--itl-ms", "50", "--output-tokens", "40")
    busy, idle = replicas
    # Load `busy` from outside the router: only its /metrics can tell.
    async with httpx.AsyncClient(timeout=30) as client:
        outside = [asyncio.create_task(client.post(
            busy.url + "/chat/completions",
            json={"model": "m", "max_tokens": 40,
                  "messages": [{"role": "user", "content": f"x{n}"}]})) for n in range(6)]
        await asyncio.sleep(0.3)
        scraper = EngineStatsScraper([busy.url, idle.url], interval_s=0.2)
        picker = ReplicaPicker({"queue": 1.0, "running": 1.0, "kv-cache": 1.0},
                               stats=scraper)
        router, _ = make_router(counter, replicas, picker)
        try:
            await scraper.scrape_once()
            stats = scraper.get(busy.url)
            assert stats is not None and stats.num_requests_waiting >= 3
            results = [await router.complete(request(f"q{n}", 2)) for n in range(8)]
        finally:
            await router.close()
            await asyncio.gather(*outside)
    assert all(r.replica == idle.url for r in results)


async def test_prefix_affinity_keeps_a_prefix_on_one_replica_until_overloaded(
        counter: TokenCounter, sims: SimFactory) -> None:
    replicas = await sims(3, "--itl-ms", "30", "--output-tokens", "10")
    picker = ReplicaPicker({"prefix-affinity": 3.0, "in-flight": 1.0})
    router, _ = make_router(counter, replicas, picker)
    system = "You are a SOC analyst. Explain the alert using the runbook. " * 20

    def explain(rule: str, n: int) -> ChatRequest:
        runbook = f"Runbook for rule {rule}: check the source address and the user. " * 20
        return ChatRequest(tenant_id="t", max_tokens=8, messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": f"{runbook}\n<alert>alert {n}</alert>"}])

    try:
        # Sequential: one replica serves every request of the prefix.
        sequential = [await router.complete(explain("5710", n)) for n in range(10)]
        assert len({r.replica for r in sequential}) == 1
        home = sequential[0].replica
        before = {s.url: await s.stats() for s in replicas}
        assert before[home].prefix_cache_hits > 0  # the replica's cache was reused
        # 30 at once: more than the load bound lets one replica take, so it spills.
        burst = await asyncio.gather(*(router.complete(explain("5710", n))
                                       for n in range(30)))
        spread = Counter(r.replica for r in burst)
        # How the burst splits depends on timing (on a busy machine the home replica is
        # not always the largest share); what must hold: it spills, and home keeps at
        # least the load bound's minimum of 4.
        assert len(spread) >= 2 and 4 <= spread[home] < 30
    finally:
        await router.close()


async def test_premium_requests_go_first_in_a_replica_with_priority_scheduling(
        counter: TokenCounter, sims: SimFactory) -> None:
    """The pool's replicas order their queues by `priority` (vLLM's `--scheduling-policy
    priority`): the router sends each request's class, so a premium request sent after
    three standard ones that are still queued on the replica starts before them."""
    from pipeline.router.admission import Admission
    from pipeline.router.config import TenantLimits, TenantQuota
    from pipeline.router.errors import UpstreamError

    replicas = await sims(1, "--max-num-seqs", "1", "--itl-ms", "40", "--output-tokens", "30",
                          "--priority-scheduling", "1")
    plain = await sims(1)  # no priority scheduling: refuses a request that carries one
    tenants = TenantLimits(overrides={"gold": TenantQuota(priority="premium")})

    def router_for(urls: list[str], priority_scheduling: bool) -> Router:
        return Router(model_name="sim-model", counter=counter, usage=ListSink(),
                      tenants=tenants, admission=Admission(max_in_flight_per_replica=100),
                      pools={"default": PoolConfig(endpoints=urls, max_context_tokens=8192,
                                                   priority_scheduling=priority_scheduling)},
                      connect_timeout_s=1.0, request_timeout_s=10.0)

    router = router_for([replicas[0].url], priority_scheduling=True)
    order: list[str] = []

    async def send(tenant: str, name: str, max_tokens: int = 4) -> None:
        # A caller cannot set its own priority: the class comes from its tenant.
        await router.complete(ChatRequest(tenant_id=tenant, max_tokens=max_tokens, messages=[
            {"role": "user", "content": f"request {name}"}], extra_body={"priority": 0}),
            on_delta=lambda _: order.append(name) if name not in order else None)

    try:
        # Holds the only slot for ~1.2 s, while the others arrive and queue on the replica.
        blocker = asyncio.create_task(send("std", "blocker", max_tokens=30))
        await asyncio.sleep(0.05)
        queued = [asyncio.create_task(send("std", f"standard-{i}")) for i in range(3)]
        await asyncio.sleep(0.05)
        await asyncio.gather(blocker, *queued, send("gold", "premium"))
    finally:
        await router.close()
    assert order[:2] == ["blocker", "premium"], order

    refused = router_for([plain[0].url], priority_scheduling=True)
    try:
        with pytest.raises(UpstreamError) as error:
            await refused.complete(ChatRequest(tenant_id="std", max_tokens=4, messages=[
                {"role": "user", "content": "a standard request carries priority 1"}]))
    finally:
        await refused.close()
    assert error.value.upstream_status == 400
