"""The lane gate: within one worker process, live work goes first.

Each stage has two subscribers, one on its live topic and one on its batch twin (backfill).
All the subscribers of a worker process share one `LaneGate`: the stages of a process share
its CPU and, in explain, the LLM, so a batch-lane batch anywhere would slow a live alert
anywhere. Live batches never wait on the gate. A batch-lane batch starts only when no live
batch is being handled in the process (a live LLM call included) and live has been idle
for `live_idle_s` (so the gap between two polls of a live burst does not let batch work
in); the batch lane uses small batches, so a live alert that arrives meanwhile shares the
process with at most one small batch per stage.

The wait is bounded by `max_wait_s`: after it the batch goes in anyway. Two reasons. Under
unbroken live load the backfill still moves (one small batch per stage per `max_wait_s`),
never starved forever. And the batch subscriber does not poll Kafka while it waits here: a
wait longer than the consumer's `max_poll_interval_ms` would make the broker drop it from
its group and rebalance — `consumers.subscription` checks the bound is well under it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

import structlog

log = structlog.get_logger(__name__)


class LaneGate:
    def __init__(self, *, live_idle_s: float = 0.5, max_wait_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_wait_s <= 0 or live_idle_s < 0:
            raise ValueError("max_wait_s must be > 0 and live_idle_s >= 0")
        self.live_idle_s = live_idle_s
        self.max_wait_s = max_wait_s
        self._clock = clock
        self._live_in_flight = 0
        self._live_ended = float("-inf")
        self._live_idle = asyncio.Event()
        self._live_idle.set()
        self.batch_turns = 0
        self.forced_turns = 0  # batch turns taken after max_wait_s with live still busy

    @property
    def live_busy(self) -> bool:
        return self._live_in_flight > 0

    @asynccontextmanager
    async def live(self) -> AsyncIterator[None]:
        """Around the handling of one live batch; never waits."""
        self._live_in_flight += 1
        self._live_idle.clear()
        try:
            yield
        finally:
            self._live_in_flight -= 1
            self._live_ended = self._clock()
            if not self._live_in_flight:
                self._live_idle.set()

    @asynccontextmanager
    async def batch(self, stage: str = "") -> AsyncIterator[None]:
        """Around the handling of one batch-lane batch: waits for live to be idle, at
        most `max_wait_s`."""
        if not await self._wait_for_turn():
            self.forced_turns += 1
            log.info("batch_lane_forced_turn", stage=stage, waited_s=self.max_wait_s)
        self.batch_turns += 1
        yield

    async def _wait_for_turn(self) -> bool:
        """True once live is idle; False when `max_wait_s` passed first."""
        deadline = self._clock() + self.max_wait_s
        while True:
            now = self._clock()
            quiet_for = now - self._live_ended
            if not self._live_in_flight and quiet_for >= self.live_idle_s:
                return True
            if now >= deadline:
                return False
            if self._live_in_flight:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._live_idle.wait(), deadline - now)
            else:
                await asyncio.sleep(min(self.live_idle_s - quiet_for, deadline - now))
