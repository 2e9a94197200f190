"""Streaming on top of `Router.complete`: the same flow (estimate, quota, admission,
replica choice, retries, usage), with the generated text handed over piece by piece."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from typing import Protocol

from pipeline.router.dispatch import DeltaCallback
from pipeline.router.types import ChatRequest, Completion


class _Completes(Protocol):
    def __call__(self, request: ChatRequest, *,
                 on_delta: DeltaCallback | None = None) -> Awaitable[Completion]: ...


async def stream_completion(complete: _Completes,
                            request: ChatRequest) -> AsyncIterator[str | Completion]:
    """Yield each text piece, then the Completion. A router error raised before the first
    piece (quota, saturation, context) is raised from the first `__anext__`, so a caller
    can still answer with an HTTP error. Closing the iterator early cancels the request."""
    queue: asyncio.Queue[str | Completion | Exception] = asyncio.Queue()

    async def run() -> None:
        try:
            queue.put_nowait(await complete(request, on_delta=queue.put_nowait))
        except Exception as exc:  # handed to the consumer, raised there
            queue.put_nowait(exc)

    task = asyncio.create_task(run(), name="router-stream")
    try:
        while True:
            item = await queue.get()
            if isinstance(item, Exception):
                raise item
            yield item
            if not isinstance(item, str):
                return
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
