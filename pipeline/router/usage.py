"""Usage events leave the request path at once: a bounded queue drained in batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from schemas.usage import UsageEvent

log = structlog.get_logger(__name__)


class UsageSink(Protocol):
    def record(self, event: UsageEvent) -> None: ...


class BatchingUsageWriter:
    """Collects events and hands them to `write_batch` (e.g. a COPY) every `interval_s` or
    every `batch_size` events. `record` never blocks."""

    def __init__(self, write_batch: Callable[[Sequence[UsageEvent]], Awaitable[int]], *,
                 batch_size: int = 500, interval_s: float = 0.5,
                 max_pending: int = 100_000) -> None:
        self._write_batch = write_batch
        self._queue: asyncio.Queue[UsageEvent] = asyncio.Queue(max_pending)
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def record(self, event: UsageEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1
            log.error("usage_event_dropped", tenant_id=event.tenant_id, reason="queue full")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def flush(self) -> None:
        while not self._queue.empty():
            batch = [self._queue.get_nowait()
                     for _ in range(min(self._batch_size, self._queue.qsize()))]
            await self._write_with_retry(batch)

    async def close(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self.flush()

    async def _write_with_retry(self, batch: list[UsageEvent]) -> None:
        for attempt in range(3):
            try:
                await self._write_batch(batch)
                return
            except Exception:
                log.exception("usage_write_failed", events=len(batch), attempt=attempt + 1)
                await asyncio.sleep(0.5 * (attempt + 1))
        self.dropped += len(batch)
