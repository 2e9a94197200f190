"""stream_completion (pipeline/router/streaming.py): the text in order, pieces that came
while the consumer was busy joined into one, the Completion last, an early refusal raised
from the first step, and closing early cancels the request."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.router.dispatch import DeltaCallback
from pipeline.router.errors import QuotaExceeded
from pipeline.router.streaming import stream_completion
from pipeline.router.types import ChatRequest, Completion

REQUEST = ChatRequest(tenant_id="t", messages=[{"role": "user", "content": "hi"}],
                      max_tokens=8)


def completion(text: str) -> Completion:
    return Completion(request_id="r", text=text, input_tokens=3, output_tokens=4,
                      estimated_input_tokens=3, ttft_ms=1, latency_ms=2, pool="default",
                      replica="http://replica/v1", finish_reason="stop")


async def collect(complete: object) -> list[str | Completion]:
    return [item async for item in stream_completion(complete, REQUEST)]  # type: ignore[arg-type]


async def test_pieces_then_the_completion_and_busy_pieces_joined() -> None:
    async def complete(request: ChatRequest, *, on_delta: DeltaCallback | None = None,
                       ) -> Completion:
        assert on_delta is not None
        on_delta("Hel")
        await asyncio.sleep(0)  # the consumer takes "Hel" alone
        await asyncio.sleep(0)
        on_delta("lo")  # two pieces before the consumer runs again: handed over as one
        on_delta(" world")
        return completion("Hello world")

    items = await collect(complete)
    assert items[:-1] == ["Hel", "lo world"]
    assert isinstance(items[-1], Completion) and items[-1].text == "Hello world"


async def test_a_refusal_before_any_text_is_raised_from_the_first_step() -> None:
    async def complete(request: ChatRequest, *, on_delta: DeltaCallback | None = None,
                       ) -> Completion:
        raise QuotaExceeded("t", 1.0)

    with pytest.raises(QuotaExceeded):
        await collect(complete)


async def test_closing_early_cancels_the_request() -> None:
    cancelled = asyncio.Event()

    async def complete(request: ChatRequest, *, on_delta: DeltaCallback | None = None,
                       ) -> Completion:
        assert on_delta is not None
        on_delta("first")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return completion("never")

    stream = stream_completion(complete, REQUEST)
    assert await anext(stream) == "first"
    await stream.aclose()  # type: ignore[attr-defined]
    assert cancelled.is_set()



async def test_a_relayed_answer_read_whole_is_passed_on_before_the_bookkeeping() -> None:
    """A short answer often comes in one read, its end included: the relay yields once
    after passing it on, so the caller writes the text before the request's usage event
    and quota settlement run (they were on the time to first token)."""
    from aiohttp import StreamReader
    from aiohttp.client_proto import ResponseHandler

    from pipeline.router.dispatch import _Gather, _relay_body
    from pipeline.router.sse_relay import SseRelay, StreamProgress

    loop = asyncio.get_running_loop()
    reader = StreamReader(ResponseHandler(loop), 2**16, loop=loop)
    reader.feed_data(b'data: {"choices":[{"delta":{"content":"hi"},"finish_reason":"stop"}]}'
                     b"\n\ndata: [DONE]\n\n")
    reader.feed_eof()
    order: list[str] = []

    def on_bytes(piece: bytes) -> None:
        order.append("passed on")
        loop.call_soon(order.append, "caller wrote")  # the consumer's next step

    await _relay_body(reader, SseRelay(StreamProgress()), on_bytes, None,
                      _Gather(reader, None, 0.02, 0.08))
    order.append("bookkeeping")
    assert order == ["passed on", "caller wrote", "bookkeeping"]


def test_relay_gathering_is_a_pool_option() -> None:
    from pipeline.router.config import PoolConfig
    from pipeline.router.fleet import Fleet

    fleet = Fleet({"a": PoolConfig(endpoints=["http://a:8000/v1"], relay_gather_s=0.05,
                                   relay_gather_max_s=0.2),
                   "b": PoolConfig(endpoints=["http://b:8000/v1"])},
                  connect_timeout_s=1.0, request_timeout_s=1.0)
    a, b = fleet.clients["http://a:8000/v1"], fleet.clients["http://b:8000/v1"]
    assert (a.gather_s, a.gather_max_s) == (0.05, 0.2)
    assert (b.gather_s, b.gather_max_s) == (0.02, 0.08)
