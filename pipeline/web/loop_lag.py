"""Event-loop lag: how late a timer fires compared with when it was due. Every request of
this process waits that long before any of its code runs, so it is the floor under the
server-side response times (a stalled loop, or the process not getting a CPU)."""

from __future__ import annotations

import asyncio
import functools
import time

from prometheus_client import REGISTRY, CollectorRegistry, Histogram

_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class LoopLagMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.lag = Histogram(
            "secanalyst_gateway_event_loop_lag_seconds",
            "How late a periodic timer of the gateway's event loop fired.",
            buckets=_BUCKETS, registry=registry)


@functools.cache  # a second set would register the same names twice: an error
def loop_lag_metrics() -> LoopLagMetrics:
    """The process-wide loop-lag metrics in the default registry (created once)."""
    return LoopLagMetrics()


async def watch_loop_lag(interval_s: float = 0.05,
                         metrics: LoopLagMetrics | None = None) -> None:
    """Runs until cancelled: sleeps `interval_s`, observes how much longer it took."""
    histogram = (metrics or loop_lag_metrics()).lag
    while True:
        started = time.monotonic()
        await asyncio.sleep(interval_s)
        histogram.observe(max(0.0, time.monotonic() - started - interval_s))
