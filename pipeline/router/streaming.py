"""Streaming on top of `Router.complete`: the same flow (estimate, quota, admission,
replica choice, retries, usage), with the output handed over piece by piece — text
pieces (`stream_completion`), or the replica's server-sent events as bytes
(`relay_completion`).

Pieces that arrive while the consumer is still busy with the previous one (a loaded
event loop, a slow client socket) are handed over joined, as one: one write downstream
instead of one per piece, so a busy router spends less per piece exactly when it is
busy. The output is the same.

A relayed stream also gathers on purpose: after handing a piece over, the next waits
until `RELAY_FLUSH_S` has passed (what arrived meanwhile goes as one). Each hand-over is
a task wake-up and a socket write for the router and a read for its client — per token,
more CPU than all the router's own work on it (py-spy: aiohttp's write ~30 % of a
relayed stream). A model streaming slower than that (vLLM on CPU: tens of ms a token) is
passed on token by token as before; the first text always goes at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

from pipeline.router.dispatch import BytesCallback, DeltaCallback
from pipeline.router.tasks import cancel_and_wait
from pipeline.router.types import ChatRequest, Completion

Piece = TypeVar("Piece", str, bytes)
RELAY_FLUSH_S = 0.02  # at most ~50 writes a second per relayed stream


class _Completes(Protocol):
    def __call__(self, request: ChatRequest, *,
                 on_delta: DeltaCallback | None = None) -> Awaitable[Completion]: ...


class _Relays(Protocol):
    def __call__(self, request: ChatRequest, *,
                 on_bytes: BytesCallback | None = None) -> Awaitable[Completion]: ...


def stream_completion(complete: _Completes,
                      request: ChatRequest) -> AsyncIterator[str | Completion]:
    """Yield the text as it comes (one or more pieces at a time), then the Completion. A
    router error raised before the first piece (quota, saturation, context) is raised
    from the first `__anext__`, so a caller can still answer with an HTTP error. Closing
    the iterator early cancels the request."""
    return _handed_over(lambda deliver: complete(request, on_delta=deliver), "")


def relay_completion(complete: _Relays, request: ChatRequest,
                     flush_s: float = RELAY_FLUSH_S) -> AsyncIterator[bytes | Completion]:
    """As `stream_completion`, with the replica's events as bytes (Router.relay), handed
    over at most once per `flush_s` after the first."""
    return _handed_over(lambda deliver: complete(request, on_bytes=deliver), b"", flush_s)


async def _handed_over(start: Callable[[Callable[[Piece], None]], Awaitable[Completion]],
                       empty: Piece, flush_s: float = 0.0,
                       ) -> AsyncIterator[Piece | Completion]:
    loop = asyncio.get_running_loop()
    handed_at = -flush_s  # the first piece goes at once
    pending: list[Piece] = []
    outcome: list[Completion | BaseException] = []
    arrived = asyncio.Event()
    gathering: list[asyncio.Future[None]] = []  # while pieces gather: ended early by the end

    def wake() -> None:
        if gathering and not gathering[0].done():
            gathering[0].set_result(None)

    def deliver(piece: Piece) -> None:
        pending.append(piece)
        arrived.set()

    async def run() -> None:
        try:
            outcome.append(await start(deliver))
        except BaseException as exc:  # handed to the consumer, raised there
            outcome.append(exc)
            if not isinstance(exc, Exception):
                raise
        finally:
            arrived.set()
            wake()

    task = asyncio.create_task(run(), name="router-stream")
    try:
        while True:
            if not pending and not outcome:
                await arrived.wait()
                arrived.clear()
            if pending:
                wait = handed_at + flush_s - loop.time()
                if wait > 0 and not outcome:  # what comes meanwhile goes with it
                    await _gather(loop, wait, gathering, wake)
                piece = pending[0] if len(pending) == 1 else empty.join(pending)
                pending.clear()
                yield piece
                handed_at = loop.time()
            elif outcome:
                if isinstance(outcome[0], BaseException):
                    raise outcome[0]
                yield outcome[0]
                return
    finally:
        if not task.done():  # a finished task's outcome was handled above
            await cancel_and_wait(task)


async def _gather(loop: asyncio.AbstractEventLoop, wait: float,
                  gathering: list[asyncio.Future[None]], wake: Callable[[], None]) -> None:
    """Sleep `wait` s, or less if the stream ends meanwhile (`wake`)."""
    gathering.append(loop.create_future())
    timer = loop.call_later(wait, wake)
    try:
        await gathering[0]
    finally:
        timer.cancel()
        gathering.clear()
