"""Each request's arrival time and deadline, stamped by a pure-ASGI middleware before any
other work, and the time to the first response byte, measured from that stamp.

Arrival is the first moment this process's code sees the request (after uvicorn parsed
its head; time spent in the kernel's accept backlog or waiting for the event loop before
that is invisible here, which is why the client-side figures of a contended machine are
larger). The deadline is arrival + the wait budget: the gateway's configured default, or
less when the caller sends `X-Secanalyst-Deadline-Ms` (a caller can shorten its budget,
never lengthen it). Past the deadline a request is refused (503 + Retry-After) at the
next checkpoint, before any further work.

Every response gets `Server-Timing: gw;dur=<ms>` (arrival → response start) and the same
time is observed in the `secanalyst_gateway_response_start_seconds` histogram by status.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEADLINE_HEADER = b"x-secanalyst-deadline-ms"
_STATE_KEY = "secanalyst_clock"
_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0, 30.0, 120.0)


@dataclass(frozen=True)
class RequestClock:
    """When the request arrived and by when it must be admitted (monotonic seconds)."""

    arrival: float
    deadline: float

    def remaining(self, now: float) -> float:
        return self.deadline - now


def wait_budget(header: bytes | None, default_s: float) -> float:
    """Seconds the request may wait: the header's milliseconds if valid and shorter than
    the default, else the default."""
    if header is None:
        return default_s
    try:
        asked = int(header) / 1000
    except ValueError:
        return default_s
    return min(default_s, asked) if asked >= 0 else default_s


def clock_of(scope: Scope) -> RequestClock | None:
    """The clock the middleware stamped on this request (None outside the middleware)."""
    state = scope.get("state")
    return state.get(_STATE_KEY) if isinstance(state, dict) else None


class GatewayTimingMetrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.response_start = Histogram(
            "secanalyst_gateway_response_start_seconds",
            "Time from a request's arrival in the gateway to the start of its response.",
            ["status"], buckets=_BUCKETS, registry=registry)


@functools.cache  # a second set would register the same names twice: an error
def gateway_timing_metrics() -> GatewayTimingMetrics:
    """The process-wide timing metrics in the default registry (created once)."""
    return GatewayTimingMetrics()


class ArrivalClock:
    """Pure-ASGI middleware: stamps `RequestClock` in the scope's state on arrival and
    times the response start (Server-Timing header + histogram)."""

    def __init__(self, app: ASGIApp, default_wait_s: float,
                 metrics: GatewayTimingMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.default_wait_s = default_wait_s
        self.metrics = metrics or gateway_timing_metrics()
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrival = self.clock()
        header = next((v for k, v in scope["headers"] if k == DEADLINE_HEADER), None)
        stamp = RequestClock(arrival, arrival + wait_budget(header, self.default_wait_s))
        scope.setdefault("state", {})[_STATE_KEY] = stamp

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = self.clock() - arrival
                message["headers"] = [*message.get("headers", ()), (
                    b"server-timing", f"gw;dur={elapsed * 1000:.3f}".encode())]
                self.metrics.response_start.labels(str(message["status"])).observe(elapsed)
            await send(message)

        await self.app(scope, receive, timed_send)
