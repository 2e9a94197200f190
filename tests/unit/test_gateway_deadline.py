"""Arrival stamping, deadlines and load shedding: the cheap refusals come before the costly
work (key check, body parsing, the router), every 429/503 has Retry-After, and the
response start is timed from the arrival stamp."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from starlette.types import Message, Receive, Scope, Send

from pipeline.config import GatewaySettings, Settings
from pipeline.router import ChatRequest, Completion, QuotaExceeded, Saturated
from pipeline.router.admission import Admission
from pipeline.router.replicas import Pool, Replica
from pipeline.store.apikeys import StoredKey, hash_key, new_key
from pipeline.web import auth as auth_module
from pipeline.web.auth import ApiKeyAuthenticator
from pipeline.web.deadline import (
    ArrivalClock,
    GatewayTimingMetrics,
    RequestClock,
    clock_of,
    wait_budget,
)
from pipeline.web.errors import with_retry_after
from pipeline.web.gateway import create_gateway_app
from pipeline.web.loop_lag import LoopLagMetrics, watch_loop_lag
from pipeline.web.resources import GatewayResources

KEY = "sak_0123456789ab_" + "x" * 43
HEADERS = {"Authorization": f"Bearer {KEY}"}
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


@pytest.mark.parametrize(("header", "expected"), [
    (None, 2.0), (b"500", 0.5), (b"0", 0.0), (b"9000", 2.0), (b"-5", 2.0), (b"soon", 2.0)])
def test_a_caller_can_shorten_its_wait_budget_never_lengthen_it(
        header: bytes | None, expected: float) -> None:
    assert wait_budget(header, 2.0) == expected


def test_request_clock_remaining() -> None:
    clock = RequestClock(arrival=10.0, deadline=11.0)
    assert clock.remaining(10.25) == 0.75
    assert clock.remaining(11.5) == -0.5


def test_middleware_stamps_arrival_and_times_the_response_start() -> None:
    now = [100.0]
    seen: list[RequestClock | None] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(clock_of(scope))
        now[0] += 0.0042  # the app's work
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    registry = CollectorRegistry()
    middleware = ArrivalClock(app, default_wait_s=1.0,
                              metrics=GatewayTimingMetrics(registry), clock=lambda: now[0])
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "headers": [(b"x-secanalyst-deadline-ms", b"250")]}
    asyncio.run(middleware(scope, receive, send))
    assert seen == [RequestClock(100.0, 100.25)]
    assert (b"server-timing", b"gw;dur=4.200") in sent[0]["headers"]
    count = registry.get_sample_value("secanalyst_gateway_response_start_seconds_count",
                                      {"status": "503"})
    under_5ms = registry.get_sample_value(
        "secanalyst_gateway_response_start_seconds_bucket", {"status": "503", "le": "0.005"})
    assert count == 1 and under_5ms == 1


def test_429_and_503_always_carry_retry_after() -> None:
    assert with_retry_after(503, {}) == {"Retry-After": "1"}
    assert with_retry_after(429, {"Retry-After": "7"}) == {"Retry-After": "7"}
    assert with_retry_after(422, {}) == {}


@dataclass
class Recorder:
    """Router, key checker and shedder in one, recording what each was asked."""

    model_name: str = "m"
    refusal: Saturated | QuotaExceeded | None = None
    calls: list[str] = field(default_factory=list)
    requests: list[ChatRequest] = field(default_factory=list)
    budgets: list[float | None] = field(default_factory=list)

    async def tenant_for(self, key: str) -> str | None:
        self.calls.append("auth")
        return "acme" if key == KEY else None

    def shed(self, tenant_id: str,
             wait_budget_s: float | None = None) -> Saturated | QuotaExceeded | None:
        self.calls.append("shed")
        self.budgets.append(wait_budget_s)
        return self.refusal

    async def readiness(self) -> tuple[bool, str]:
        return True, "ready"

    async def complete(self, request: ChatRequest) -> Completion:
        self.calls.append("router")
        self.requests.append(request)
        return Completion(request_id="r", text="ok", input_tokens=3, output_tokens=1,
                          estimated_input_tokens=3, ttft_ms=1, latency_ms=2, pool="default",
                          replica="http://a/v1", finish_reason="stop")

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Completion]:
        yield await self.complete(request)

    async def relay(self, request: ChatRequest) -> AsyncIterator[bytes | Completion]:
        yield await self.complete(request)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def client(recorder: Recorder) -> Iterator[TestClient]:
    @asynccontextmanager
    async def resources(_: Settings) -> AsyncIterator[GatewayResources]:
        yield GatewayResources(router=recorder, auth=recorder, shedder=recorder)

    settings = Settings(gateway=GatewaySettings(queue_deadline_s=2.0))
    with TestClient(create_gateway_app(settings, resources)) as test_client:
        yield test_client


def test_a_passed_deadline_is_refused_before_the_key_or_the_body(
        client: TestClient, recorder: Recorder) -> None:
    response = client.post("/v1/chat/completions", content=b"{not json",
                           headers={"X-Secanalyst-Deadline-Ms": "0"})
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert response.headers["Server-Timing"].startswith("gw;dur=")
    assert recorder.calls == []  # no key check, no shedding look, no router


def test_shedding_refuses_before_the_body_is_parsed(client: TestClient,
                                                    recorder: Recorder) -> None:
    recorder.refusal = Saturated(2.4)
    response = client.post("/v1/chat/completions", content=b"{not json", headers=HEADERS)
    assert response.status_code == 503  # not 400: the body was never read
    assert response.headers["Retry-After"] == "3"
    assert recorder.calls == ["auth", "shed"]
    budget = recorder.budgets[0]
    assert budget is not None and 0 < budget <= 2.0  # what is left of the 2 s deadline


def test_the_router_gets_what_is_left_of_the_deadline(client: TestClient,
                                                      recorder: Recorder) -> None:
    response = client.post("/v1/chat/completions", json=BODY,
                           headers={**HEADERS, "X-Secanalyst-Deadline-Ms": "800"})
    assert response.status_code == 200
    assert recorder.calls == ["auth", "shed", "router"]
    left = recorder.requests[0].deadline_s
    assert left is not None and 0.5 < left <= 0.8
    timing = response.headers["Server-Timing"]
    assert "wait;dur=" in timing and "gw;dur=" in timing


def test_the_timing_histogram_is_exported(client: TestClient) -> None:
    client.post("/v1/chat/completions", json=BODY, headers=HEADERS)
    text = client.get("/metrics").text
    assert 'secanalyst_gateway_response_start_seconds_bucket{le="0.005",status="200"}' in text


def pool() -> Pool:
    return Pool("default", 4096, [Replica("http://a/v1", "default")])


async def fill(admission: Admission, p: Pool, release: asyncio.Event, n: int,
               priority: str = "standard") -> list[asyncio.Task[None]]:
    async def hold() -> None:
        async with admission.slot(p, priority, "t"):
            await release.wait()

    tasks = [asyncio.create_task(hold()) for _ in range(n)]
    for _ in range(5):
        await asyncio.sleep(0)
    return tasks


async def test_would_refuse_a_full_queue_unless_a_lower_class_can_be_evicted() -> None:
    admission, p, release = Admission(max_in_flight_per_replica=1, max_queue=2), pool(), \
        asyncio.Event()
    assert admission.would_refuse(p, "standard") is None  # never used: room
    tasks = await fill(admission, p, release, 3, priority="batch")  # 1 in flight + 2 queued
    assert admission.snapshot(p.name) == (1, 2)
    assert isinstance(admission.would_refuse(p, "batch"), Saturated)
    assert admission.would_refuse(p, "standard") is None  # it would evict a batch waiter
    release.set()
    await asyncio.gather(*tasks)
    assert admission.would_refuse(p, "batch") is None


async def test_would_refuse_when_the_expected_wait_exceeds_the_budget() -> None:
    # 1 slot, hold time 1 s (initial estimate): one waiter ahead → ~2 s expected.
    admission, p, release = Admission(max_in_flight_per_replica=1, max_queue=10), pool(), \
        asyncio.Event()
    tasks = await fill(admission, p, release, 2)
    refusal = admission.would_refuse(p, "standard", wait_budget_s=0.5)
    assert isinstance(refusal, Saturated) and 1.5 < refusal.retry_after < 2.5
    assert admission.would_refuse(p, "standard", wait_budget_s=5.0) is None
    assert admission.would_refuse(p, "standard") is None
    release.set()
    await asyncio.gather(*tasks)


async def test_loop_lag_is_observed_until_cancelled() -> None:
    registry = CollectorRegistry()
    task = asyncio.create_task(watch_loop_lag(0.001, LoopLagMetrics(registry)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    count = registry.get_sample_value("secanalyst_gateway_event_loop_lag_seconds_count")
    assert count is not None and count >= 3


class CachedRecorder(Recorder):
    def cached_tenant(self, key: str, *, stale_ok: bool = False) -> str | None:
        self.calls.append("cached")
        return "acme" if key == KEY else None


def gate_client(recorder: Recorder) -> TestClient:
    @asynccontextmanager
    async def resources(_: Settings) -> AsyncIterator[GatewayResources]:
        yield GatewayResources(router=recorder, auth=recorder, shedder=recorder)

    return TestClient(create_gateway_app(Settings(), resources))


def test_a_cached_key_is_shed_before_the_framework() -> None:
    recorder = CachedRecorder(refusal=Saturated(0.2))
    with gate_client(recorder) as client:
        response = client.post("/v1/chat/completions", content=b"{not json",
                               headers=HEADERS)
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert response.json()["error"]["type"] == "overloaded_error"
        assert response.headers["X-Secanalyst-Refusal"] == "saturated"
        assert response.headers["Server-Timing"].startswith("gw;dur=")
        assert recorder.calls == ["cached", "shed"]  # no full key check, no body read
        recorder.refusal, recorder.calls = None, []
        assert client.post("/v1/chat/completions", json=BODY,
                           headers=HEADERS).status_code == 200
        assert recorder.calls == ["cached", "shed", "auth", "shed", "router"]


def test_a_tenant_over_quota_is_refused_429_before_the_framework() -> None:
    recorder = CachedRecorder(refusal=QuotaExceeded("acme", 2.5, 2.5))
    with gate_client(recorder) as client:
        response = client.post("/v1/chat/completions", content=b"{not json",
                               headers=HEADERS)
        assert response.status_code == 429 and response.headers["Retry-After"] == "3"
        assert response.json()["error"]["type"] == "rate_limit_error"
        assert recorder.calls == ["cached", "shed"]  # no full key check, no body read


def test_an_unknown_key_goes_on_to_the_full_check() -> None:
    recorder = CachedRecorder(refusal=Saturated(0.2))
    with gate_client(recorder) as client:
        response = client.post("/v1/chat/completions", json=BODY,
                               headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert recorder.calls == ["cached", "auth"]


class FakePool:
    @asynccontextmanager
    async def connection(self) -> AsyncIterator[object]:
        yield object()


async def test_key_lookups_are_shared_and_a_stale_entry_can_decide_a_refusal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    pepper = b"p" * 40
    key_id, key = new_key()
    fetches: list[str] = []

    async def fetch_key(_: object, wanted: str) -> StoredKey | None:
        fetches.append(wanted)
        await asyncio.sleep(0.01)
        return StoredKey(tenant_id="acme", key_hash=hash_key(pepper, key), revoked=False)

    monkeypatch.setattr(auth_module, "fetch_key", fetch_key)
    now = [0.0]
    auth = ApiKeyAuthenticator(FakePool(), pepper, cache_s=5.0,  # type: ignore[arg-type]
                               clock=lambda: now[0])
    assert auth.cached_tenant(key, stale_ok=True) is None  # never verified
    tenants = await asyncio.gather(*(auth.tenant_for(key) for _ in range(20)))
    assert tenants == ["acme"] * 20 and fetches == [key_id]  # one lookup for all
    now[0] = 10.0  # the entry expired
    assert auth.cached_tenant(key) is None
    assert auth.cached_tenant(key, stale_ok=True) == "acme"
    assert auth.cached_tenant(key[:-2] + "zz", stale_ok=True) is None  # wrong secret
    assert await auth.tenant_for(key) == "acme" and fetches == [key_id, key_id]
    now[0] = 14.5  # last fifth of the cache time: answered at once, refreshed behind
    assert await auth.tenant_for(key) == "acme" and len(fetches) == 2  # no wait
    await asyncio.sleep(0.02)
    assert fetches == [key_id] * 3  # the refresh ran meanwhile
    now[0] = 16.0  # past the first expiry, within the refreshed entry's time
    assert await auth.tenant_for(key) == "acme" and len(fetches) == 3
