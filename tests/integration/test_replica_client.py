"""ReplicaClient over real HTTP: the simulator (bench/vllm_sim) in this event loop for the
OpenAI streaming protocol and its faults, and a small aiohttp app that records what it
was sent and streams back what a test tells it to."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from bench.vllm_sim.engine import SimConfig
from bench.vllm_sim.server import SimCluster
from pipeline.router.dispatch import (
    ReplicaClient,
    ReplicaServerError,
    ReplicaStatusError,
    ReplicaStreamError,
    ReplicaUnavailable,
)
from pipeline.router.errors import UpstreamError
from tests.servers import free_port

pytestmark = pytest.mark.timeout(60)
BODY = {"model": "sim-model", "max_tokens": 4, "temperature": 0.0,
        "messages": [{"role": "user", "content": "one two three"}]}


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[SimCluster]:
    cluster = SimCluster([SimConfig(itl_ms=1, prefill_ms_per_token=0, output_tokens=3,
                                    seed=1)])
    await cluster.start()
    yield cluster
    await cluster.stop()


def client(url: str, timeout_s: float = 10.0) -> ReplicaClient:
    return ReplicaClient(url, connect_timeout_s=1.0, request_timeout_s=timeout_s)


async def test_streams_text_usage_and_first_token(sim: SimCluster) -> None:
    replica = client(sim.base_urls()[0])
    pieces: list[str] = []
    first: list[int] = []
    try:
        upstream = await replica.chat(BODY, pieces.append, lambda: first.append(len(pieces)))
    finally:
        await replica.close()
    assert upstream.text == "tok0 tok1 tok2" == "".join(pieces)
    assert first == [0]  # called once, before the first piece was passed on
    # 3 words + 4 per message, as the simulator counts
    assert (upstream.prompt_tokens, upstream.completion_tokens) == (7, 3)
    assert upstream.finish_reason == "stop"
    assert upstream.ttft_ms is not None and upstream.latency_ms >= upstream.ttft_ms


async def test_5xx_is_a_server_error_and_4xx_a_status_error(sim: SimCluster) -> None:
    sim.engines[0].config.fail_rate = 1.0
    replica = client(sim.base_urls()[0])
    missing = client(sim.base_urls()[0].removesuffix("/v1") + "/nowhere")
    try:
        with pytest.raises(ReplicaServerError) as server_error:
            await replica.chat(BODY)
        with pytest.raises(ReplicaStatusError) as not_found:
            await missing.chat(BODY)
    finally:
        await replica.close()
        await missing.close()
    assert server_error.value.status_code == 500
    assert server_error.value.body == {"message": "injected failure", "type": "sim",
                                       "code": 500}
    assert not_found.value.status_code == 404
    assert not isinstance(not_found.value, ReplicaServerError)


async def test_dropped_refused_and_slow_replicas_are_unavailable(sim: SimCluster) -> None:
    sim.engines[0].config.drop_rate = 1.0
    dropping = client(sim.base_urls()[0])
    refused = client(f"http://127.0.0.1:{free_port()}/v1")
    try:
        with pytest.raises(ReplicaUnavailable):
            await dropping.chat(BODY)
        with pytest.raises(ReplicaUnavailable):
            await refused.chat(BODY)
        sim.engines[0].config.drop_rate = 0.0
        sim.engines[0].config.slow_factor = 500.0  # 0.5 s between tokens
        slow = client(sim.base_urls()[0], timeout_s=0.2)
        try:
            with pytest.raises(ReplicaUnavailable, match="timed out"):
                await slow.chat(BODY)
        finally:
            await slow.close()
    finally:
        await dropping.close()
        await refused.close()


class Recorder:
    """Records each request body; answers with the given SSE lines."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, object]] = []
        self.lines: list[bytes] = []
        self.url = ""

    async def chat(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for line in self.lines:
            await response.write(line)
        await response.write_eof()
        return response


@pytest_asyncio.fixture
async def recorder() -> AsyncIterator[Recorder]:
    rec = Recorder()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", rec.chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    rec.url = f"http://127.0.0.1:{port}/v1"
    yield rec
    await runner.cleanup()


def event(payload: object) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def delta(text: str) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


async def test_sends_a_streamed_request_with_extra_body_merged(recorder: Recorder) -> None:
    recorder.lines = [b": a comment\n\n", event(delta("a")),
                      # one event's data may span lines (SSE): joined with a newline
                      b'data: {"choices": [{"index": 0,\ndata: "delta": {"content": "b"},'
                      b' "finish_reason": "length"}]}\n\n',
                      event({"choices": [], "usage": {"prompt_tokens": 5,
                                                      "completion_tokens": 2}}),
                      b"data: [DONE]\n\n", event(delta("after done"))]
    replica = client(recorder.url)
    try:
        upstream = await replica.chat({**BODY, "response_format": {"type": "json_object"},
                                       "extra_body": {"guided_choice": ["x", "y"]}})
    finally:
        await replica.close()
    sent = recorder.bodies[0]
    # Running usage in every chunk: a stream cut by the client is charged what was streamed.
    assert sent["stream"] is True and sent["stream_options"] == {
        "include_usage": True, "continuous_usage_stats": True}
    assert sent["guided_choice"] == ["x", "y"] and "extra_body" not in sent
    assert sent["response_format"] == {"type": "json_object"}
    assert sent["messages"] == BODY["messages"]
    assert (upstream.text, upstream.finish_reason) == ("ab", "length")
    assert (upstream.prompt_tokens, upstream.completion_tokens) == (5, 2)


async def test_an_error_event_in_the_stream(recorder: Recorder) -> None:
    recorder.lines = [event(delta("partial")),
                      event({"error": {"message": "engine died", "code": 500}})]
    replica = client(recorder.url)
    try:
        with pytest.raises(ReplicaStreamError, match="engine died"):
            await replica.chat(BODY)  # nothing passed on yet: the caller may retry
        with pytest.raises(UpstreamError, match="engine died"):
            await replica.chat(BODY, on_delta=lambda _: None)  # text already passed on
    finally:
        await replica.close()


async def test_a_pooled_connection_closed_under_a_request_is_retried_on_a_new_one() -> None:
    """The keep-alive race: the server closes an idle pooled connection just as the next
    request is written onto it. The request never ran, so it is sent again, once."""
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
              b"Content-Length: %d\r\n\r\n")
    body = event(delta("ok")) + b"data: [DONE]\n\n"
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections))
        first_on_this_connection = True
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
            if not first_on_this_connection:  # the second request: closed unanswered
                writer.close()
                return
            first_on_this_connection = False
            writer.write(answer % len(body) + body)
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    replica = client(f"http://127.0.0.1:{port}/v1")
    try:
        first = await replica.chat(BODY)
        second = await replica.chat(BODY)  # written onto the pooled connection: dropped
    finally:
        await replica.close()
        server.close()
    assert first.text == second.text == "ok"
    assert len(connections) == 2  # the retry went over a new connection


async def test_relay_passes_the_events_on_as_they_came(sim: SimCluster) -> None:
    """The relayed path (Router.relay): the replica's bytes from the first text on, the
    counts, finish reason and TTFT as `chat` reads them."""
    replica = client(sim.base_urls()[0])
    relayed: list[bytes] = []
    first: list[int] = []
    try:
        parsed = await replica.chat(BODY)
        upstream = await replica.relay(BODY, relayed.append,
                                       lambda: first.append(len(relayed)))
    finally:
        await replica.close()
    stream = b"".join(relayed)
    assert first == [0] and stream.endswith(b"data: [DONE]\n\n")
    events = [json.loads(b[6:]) for b in stream.split(b"\n\n") if b.startswith(b"data: {")]
    text = "".join(c["delta"].get("content") or "" for e in events for c in e["choices"])
    assert text == parsed.text == "tok0 tok1 tok2" and upstream.text == ""
    assert (upstream.prompt_tokens, upstream.completion_tokens, upstream.finish_reason) == (
        parsed.prompt_tokens, parsed.completion_tokens, parsed.finish_reason)
    assert upstream.ttft_ms is not None and upstream.latency_ms >= upstream.ttft_ms


async def test_relay_error_event_before_and_after_the_first_text(recorder: Recorder) -> None:
    error = event({"error": {"message": "engine died", "code": 500}})
    replica = client(recorder.url)
    relayed: list[bytes] = []
    try:
        recorder.lines = [event({"choices": [{"delta": {"role": "assistant"}}]}), error]
        with pytest.raises(ReplicaStreamError, match="engine died"):
            await replica.relay(BODY, relayed.append)  # nothing passed on: retry elsewhere
        assert relayed == []
        recorder.lines = [event(delta("partial")), error]
        with pytest.raises(UpstreamError, match="engine died"):
            await replica.relay(BODY, relayed.append)
    finally:
        await replica.close()
    assert b"".join(relayed) == event(delta("partial"))  # the error event not passed on


async def test_relay_gathers_a_fast_stream_after_the_first_text() -> None:
    """Tokens 5 ms apart (0.2 s in all), read at most every 0.5 s after the first text:
    the first piece at once (only the first token), the rest as one, and the end passed
    on when it comes — not when the gathering interval is over."""
    cluster = SimCluster([SimConfig(itl_ms=5, prefill_ms_per_token=0, output_tokens=40,
                                    seed=1)])
    await cluster.start()
    replica = client(cluster.base_urls()[0])
    pieces: list[bytes] = []
    loop = asyncio.get_running_loop()
    try:
        started = loop.time()
        upstream = await replica.relay({**BODY, "max_tokens": 40}, pieces.append,
                                       gather_s=0.5)
        took = loop.time() - started
    finally:
        await replica.close()
        await cluster.stop()
    assert b"tok0" in pieces[0] and b"tok1" not in pieces[0]
    assert len(pieces) == 2
    stream = b"".join(pieces)
    assert all(b"tok%d" % n in stream for n in range(40)) and stream.endswith(b"[DONE]\n\n")
    assert upstream.completion_tokens == 40 and upstream.finish_reason == "length"
    assert took < 0.45  # woken by the end of the stream


async def test_relay_with_reading_paused_between_reads_loses_nothing() -> None:
    """From the second gathering wait on the socket is not read (the kernel holds the
    tokens): all the text still comes, in few pieces, and the pooled connection is
    resumed and reused for the next request."""
    cluster = SimCluster([SimConfig(itl_ms=5, prefill_ms_per_token=0, output_tokens=60,
                                    seed=1)])
    await cluster.start()
    replica = client(cluster.base_urls()[0])
    streams: list[list[bytes]] = [[], []]
    try:
        for pieces in streams:
            upstream = await replica.relay({**BODY, "max_tokens": 60}, pieces.append,
                                           gather_s=0.05)
            assert upstream.completion_tokens == 60 and upstream.finish_reason == "length"
        connector = replica._open().connector
        assert connector is not None
        connections = sum(len(idle) for idle in connector._conns.values())
    finally:
        await replica.close()
        await cluster.stop()
    for pieces in streams:
        stream = b"".join(pieces)
        assert all(b"tok%d" % n in stream for n in range(60))
        assert stream.endswith(b"[DONE]\n\n") and len(pieces) <= 60 * 0.005 / 0.05 + 3
    assert connections == 1  # kept alive and idle in the pool, not closed


async def test_relay_gathering_interval_doubles_up_to_its_cap() -> None:
    """Tokens 5 ms apart for 0.4 s: read 20, 40, 80, 80 … ms apart after the first text
    (each read costs the router ~0.1 ms of CPU), not every 20 ms — far fewer pieces, and
    still all the text, then the end."""
    cluster = SimCluster([SimConfig(itl_ms=5, prefill_ms_per_token=0, output_tokens=80,
                                    seed=1)])
    await cluster.start()
    replica = client(cluster.base_urls()[0])
    pieces: dict[float, list[bytes]] = {0.02: [], 0.08: []}
    try:
        for cap, relayed in pieces.items():
            upstream = await replica.relay({**BODY, "max_tokens": 80}, relayed.append,
                                           gather_s=0.02, gather_max_s=cap)
            assert upstream.completion_tokens == 80 and upstream.finish_reason == "length"
    finally:
        await replica.close()
        await cluster.stop()
    for relayed in pieces.values():
        stream = b"".join(relayed)
        assert all(b"tok%d" % n in stream for n in range(80))
        assert stream.endswith(b"[DONE]\n\n")
    # 0.4 s: 1 + 20 pieces at a fixed 20 ms (fewer on a busy machine), ≤ 1 + 8 doubling.
    assert len(pieces[0.08]) <= 9
    assert len(pieces[0.08]) * 1.5 <= len(pieces[0.02])
