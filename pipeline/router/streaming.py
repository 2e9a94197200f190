"""Streaming on top of `Router.complete`: the same flow (estimate, quota, admission,
replica choice, retries, usage), with the output handed over piece by piece — text
pieces (`stream_completion`), or the replica's server-sent events as bytes
(`relay_completion`).

Pieces that arrive while the consumer is still busy with the previous one (a loaded
event loop, a slow client socket) are handed over joined, as one: one write downstream
instead of one per piece, so a busy router spends less per piece exactly when it is
busy. The output is the same. (A relayed stream arrives gathered already: dispatch.py.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

from pipeline.router.dispatch import BytesCallback, DeltaCallback
from pipeline.router.tasks import cancel_and_wait
from pipeline.router.types import ChatRequest, Completion

Piece = TypeVar("Piece", str, bytes)


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


def relay_completion(complete: _Relays,
                     request: ChatRequest) -> AsyncIterator[bytes | Completion]:
    """As `stream_completion`, with the replica's events as bytes (Router.relay)."""
    return _handed_over(lambda deliver: complete(request, on_bytes=deliver), b"")


async def _handed_over(start: Callable[[Callable[[Piece], None]], Awaitable[Completion]],
                       empty: Piece) -> AsyncIterator[Piece | Completion]:
    pending: list[Piece] = []
    outcome: list[Completion | BaseException] = []
    arrived = asyncio.Event()

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

    task = asyncio.create_task(run(), name="router-stream")
    try:
        while True:
            if not pending and not outcome:
                await arrived.wait()
                arrived.clear()
            if pending:
                piece = pending[0] if len(pending) == 1 else empty.join(pending)
                pending.clear()
                yield piece
            elif outcome:
                if isinstance(outcome[0], BaseException):
                    raise outcome[0]
                yield outcome[0]
                return
    finally:
        if not task.done():  # a finished task's outcome was handled above
            await cancel_and_wait(task)
