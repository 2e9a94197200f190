"""A token bucket: `acquire(n)` waits until n tokens have accrued at `rate` per second
(bursts up to `burst`); rate 0 means unlimited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


class TokenBucket:
    def __init__(self, rate: float, burst: float | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._last = clock()

    async def acquire(self, n: int = 1) -> None:
        if self.rate <= 0:
            return
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= n  # may go negative: the debt is slept off now
        if self._tokens < 0:
            wait = -self._tokens / self.rate
            self._tokens, self._last = 0.0, now + wait
            await self._sleep(wait)
