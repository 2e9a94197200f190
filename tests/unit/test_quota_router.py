"""Router.complete with quotas and admission: reserve, settle with real usage, release on
failure, and a usage event for every refusal. The backend is a minimal HTTP server that
streams one OpenAI chat completion (SSE) with usage, on a free local port."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from pipeline.router import ChatRequest, QuotaExceeded, RequestOverQuota, Router, Saturated
from pipeline.router.admission import Admission
from pipeline.router.config import PoolConfig, TenantLimits, TenantQuota
from pipeline.router.errors import NoHealthyReplica
from pipeline.router.quota import MemoryQuotaStore, QuotaLimits
from pipeline.router.quota.blocks import QuotaBlocks
from pipeline.router.usage import BatchingUsageWriter
from schemas.usage import UsageEvent
from tests.unit.test_router_units import ListStore

PROMPT_TOKENS = 40  # what the fake counter and the backend both report
COMPLETION_TOKENS = 7


class FixedCounter:
    def count_chat(self, messages: object) -> int:
        return PROMPT_TOKENS


class ListSink:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> None:
        self.events.append(event)


def _chunk(**fields: object) -> bytes:
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m",
            **fields}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    await reader.readexactly(length)
    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                 b"connection: close\r\n\r\n")
    writer.write(_chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": "ok"},
                                  "finish_reason": None}]))
    writer.write(_chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]))
    writer.write(_chunk(choices=[], usage={
        "prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS}))
    writer.write(b"data: [DONE]\n\n")
    await writer.drain()
    writer.close()


@pytest_asyncio.fixture
async def backend() -> AsyncIterator[str]:
    server = await asyncio.start_server(_serve_one, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1"
    server.close()
    await server.wait_closed()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


def make_router(url: str, store: MemoryQuotaStore, sink: ListSink,
                admission: Admission | None = None) -> Router:
    tenants = TenantLimits(tokens_per_minute=1_000, tokens_per_day=100_000, overrides={
        "vip": TenantQuota(priority="premium")})
    return Router(model_name="m", pools={"default": PoolConfig(endpoints=[url])},
                  counter=FixedCounter(), usage=sink,  # type: ignore[arg-type]
                  connect_timeout_s=1, request_timeout_s=5, quota=store,
                  admission=admission, tenants=tenants)


def request(tenant: str = "t", max_tokens: int = 100, **kw: object) -> ChatRequest:
    return ChatRequest(tenant_id=tenant, messages=[{"role": "user", "content": "hi"}],
                       max_tokens=max_tokens, **kw)  # type: ignore[arg-type]


async def test_success_settles_with_real_usage_and_priority_comes_from_the_tenant(
        backend: str) -> None:
    store, sink = MemoryQuotaStore(), ListSink()
    router = make_router(backend, store, sink)
    completion = await router.complete(request("vip", max_tokens=300))
    assert (completion.input_tokens, completion.output_tokens) == (40, 7)
    assert store.tokens_in_window("vip") == (47, 47)  # 340 reserved, 293 refunded
    assert [(e.status_code, e.priority) for e in sink.events] == [(200, "premium")]
    await router.close()


async def test_over_quota_is_refused_before_dispatch_and_recorded(backend: str) -> None:
    store, sink = MemoryQuotaStore(), ListSink()
    router = make_router(backend, store, sink)
    with pytest.raises(RequestOverQuota) as too_big:
        await router.complete(request(max_tokens=1_000))  # 1,040 > 1,000 per minute: never
    assert (too_big.value.tokens, too_big.value.limit) == (1_040, 1_000)
    for _ in range(3):
        await router.complete(request(max_tokens=260))  # reserves 300, uses 47
    assert store.tokens_in_window("t") == (141, 141)
    with pytest.raises(QuotaExceeded) as caught:
        await router.complete(request(max_tokens=900))  # 940 > 1,000 - 141 left: later
    assert caught.value.retry_after > 0
    assert [(e.status_code, e.error_kind) for e in (sink.events[0], sink.events[-1])] == [
        (413, "request_over_quota"), (429, "quota_exceeded")]
    assert sink.events[-1].pool == "default"
    await router.close()


async def test_failure_releases_the_whole_reservation() -> None:
    store, sink = MemoryQuotaStore(), ListSink()
    router = make_router(closed_port_url(), store, sink)
    with pytest.raises(NoHealthyReplica) as caught:
        await router.complete(request(max_tokens=500))
    assert caught.value.outage  # every replica unreachable: wait, do not give up
    assert store.tokens_in_window("t") == (0, 0)
    assert sink.events[-1].status_code == 503
    assert not sink.events[-1].dispatched  # a refusal: a metric, not a usage row
    await router.close()


async def test_unreachable_replicas_leave_no_usage_row_through_the_writer() -> None:
    """The row reserved before the send is deleted when no replica could be reached."""
    store = ListStore()
    writer = BatchingUsageWriter(store, interval_s=0.05)
    writer.start()
    router = make_router(closed_port_url(), MemoryQuotaStore(), writer)  # type: ignore[arg-type]
    for _ in range(3):  # a consumer retrying through the outage
        with pytest.raises(NoHealthyReplica):
            await router.complete(request(max_tokens=100))
    await writer.close()
    await router.close()
    reserved = [e.id for b in store.batches for e in b.upserts]
    deleted = [e.id for b in store.batches for e in b.deletes]
    assert sorted(reserved) == sorted(deleted)  # every reserved row deleted: none left


async def test_a_cancelled_call_is_charged_its_prompt_and_keeps_it_in_the_quota(
        ) -> None:
    started = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        started.set()
        await asyncio.sleep(30)  # prefilling forever

    server = await asyncio.start_server(stall, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    store, sink = MemoryQuotaStore(), ListSink()
    router = make_router(url, store, sink)
    task = asyncio.create_task(router.complete(request(max_tokens=300)))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [(e.status_code, e.error_kind, e.input_tokens, e.output_tokens)
            for e in sink.events] == [(499, "client_disconnect", PROMPT_TOKENS, 0)]
    assert store.tokens_in_window("t") == (PROMPT_TOKENS, PROMPT_TOKENS)  # not refunded
    await router.close()
    server.close()


async def test_saturated_is_recorded_and_releases_quota(backend: str) -> None:
    store, sink = MemoryQuotaStore(), ListSink()
    admission = Admission(max_in_flight_per_replica=1, max_queue=0)
    router = make_router(backend, store, sink, admission)
    pool = router._pools[0]
    async with admission.slot(pool, "standard", "other"):
        with pytest.raises(Saturated) as caught:
            await router.complete(request(deadline_s=5))
    assert caught.value.retry_after > 0
    assert store.tokens_in_window("t") == (0, 0)
    assert [(e.status_code, e.error_kind) for e in sink.events] == [(503, "saturated")]
    assert admission.snapshot("default") == (0, 0)
    await router.close()


class CountingCounter(FixedCounter):
    def __init__(self) -> None:
        self.calls = 0

    def count_chat(self, messages: object) -> int:
        self.calls += 1
        return PROMPT_TOKENS


async def test_a_tenant_whose_quota_fits_no_request_is_refused_without_counting(
        backend: str) -> None:
    store, sink, counter = MemoryQuotaStore(), ListSink(), CountingCounter()
    router = make_router(backend, store, sink)
    router._counter = counter  # type: ignore[assignment]
    limits = QuotaLimits(tokens_per_minute=1_000, tokens_per_day=100_000)
    held = await store.reserve("t", 980, limits)  # 20 left < the smallest request (40)
    with pytest.raises(QuotaExceeded) as first:
        await router.complete(request("t"))
    assert first.value.blocked_for > 0 and counter.calls == 1
    with pytest.raises(QuotaExceeded) as second:  # refused before counting
        await router.complete(request("t"))
    assert counter.calls == 1
    assert 0 < second.value.retry_after <= first.value.retry_after
    refusal = router.shed("t")  # the gateway's check before reading the body
    assert isinstance(refusal, QuotaExceeded)
    assert [(e.status_code, e.error_kind) for e in sink.events] == [
        (429, "quota_exceeded")] * 3  # every refusal is a usage event
    assert router.shed("other") is None  # other tenants are not affected
    await router._settle(held, 0)  # a refund in this process lifts the block
    assert router.shed("t") is None
    await router.complete(request("t"))
    assert counter.calls == 2
    await router.close()


def test_quota_blocks_expire_and_lift() -> None:
    blocks = QuotaBlocks()
    blocks.block("t", until=10.0)
    blocks.block("t", until=5.0)  # an earlier end never shortens a block
    assert blocks.remaining("t", 4.0) == 6.0
    assert blocks.remaining("u", 4.0) == 0.0
    assert blocks.remaining("t", 10.0) == 0.0  # expired: gone
    blocks.block("t", until=20.0)
    blocks.lift("t")
    assert blocks.remaining("t", 11.0) == 0.0


@pytest.mark.parametrize("event", [b'data: {"error": {"message": "engine dead"}}\n\n',
                                   b"data: {not json\n\n"])
async def test_a_broken_stream_is_an_outage_error_not_a_crash(event: bytes) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"connection: close\r\n\r\n" + event)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(broken, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
    store, sink = MemoryQuotaStore(), ListSink()
    router = make_router(url, store, sink)
    with pytest.raises(NoHealthyReplica) as caught:  # its only replica failed: retried
        await router.complete(request(max_tokens=100))
    assert caught.value.outage and store.tokens_in_window("t") == (0, 0)
    await router.close()
    server.close()
