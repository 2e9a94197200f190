"""A circuit breaker for a whole dependency (the model server), shared by a stage's calls.

When every replica is down, retrying each alert on its own hammers the server and, if the
failure escapes the batch, rewinds and repeats work already done. Instead the first
outage opens the circuit: no call is made until a capped, jittered exponential back-off
has passed (1 s, 2 s, 4 s … 60 s); then one call goes as a probe (half-open) while the
others keep waiting; its success closes the circuit for everyone, its failure opens it
again for longer. Callers simply wait — they keep their place in their batch.

`CircuitBreaker` is the state machine (time is passed in, so it is tested with a fake
clock); `CircuitGate` makes async callers wait on it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

import structlog
from prometheus_client import Gauge

log = structlog.get_logger(__name__)

# Open or half-open (a probe is deciding): the dependency's calls are held back. Shown on
# the LLM dashboard; a process's gates of the same name share the series.
CIRCUIT_OPEN = Gauge("secanalyst_circuit_open", "1 while a circuit breaker holds the calls "
                     "to a dependency back (open, or half-open while a probe decides).",
                     ["circuit"])

T = TypeVar("T")


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Ticket(StrEnum):
    """How a call was let through: only a probe's failure may re-open a half-open circuit
    (late failures of calls sent before the outage was noticed do not escalate)."""

    NORMAL = "normal"
    PROBE = "probe"


@dataclass(frozen=True)
class Backoff:
    base_s: float = 1.0
    cap_s: float = 60.0
    jitter: float = 0.2  # ± this fraction, so many consumers do not probe in step

    def delay(self, failures: int, unit_random: float) -> float:
        raw = min(self.cap_s, self.base_s * 2.0 ** max(failures - 1, 0))
        return min(self.cap_s, raw * (1 - self.jitter + 2 * self.jitter * unit_random))


class CircuitBreaker:
    def __init__(self, backoff: Backoff | None = None,
                 rng: Callable[[], float] = random.random) -> None:
        self.backoff = backoff or Backoff()
        self._rng = rng
        self.state = State.CLOSED
        self.failures = 0  # consecutive outages (probe failures) since the last success
        self.open_until = 0.0
        self.opened_at: float | None = None  # start of the current outage

    def try_acquire(self, now: float) -> Ticket | None:
        """A ticket when a call may go now, None when it must wait."""
        if self.state is State.CLOSED:
            return Ticket.NORMAL
        if self.state is State.OPEN and now >= self.open_until:
            self.state = State.HALF_OPEN
            return Ticket.PROBE
        return None

    def wait_s(self, now: float) -> float | None:
        """Seconds until a probe may go; None while a probe is in flight (wait for it)."""
        if self.state is State.HALF_OPEN:
            return None
        return max(0.0, self.open_until - now) if self.state is State.OPEN else 0.0

    def record_success(self) -> None:
        self.state = State.CLOSED
        self.failures = 0
        self.opened_at = None

    def record_failure(self, now: float, ticket: Ticket, at_least_s: float = 0.0) -> float:
        """An outage seen by a call; returns how long the circuit now stays open."""
        if self.state is State.CLOSED or ticket is Ticket.PROBE:
            self.failures += 1
            delay = max(self.backoff.delay(self.failures, self._rng()), at_least_s)
            self.state = State.OPEN
            self.open_until = now + delay
            if self.opened_at is None:
                self.opened_at = now
        elif self.state is State.OPEN:  # already open: a late failure only extends a hint
            self.open_until = max(self.open_until, now + at_least_s)
        return max(0.0, self.open_until - now)

    def abandon(self, now: float, ticket: Ticket) -> None:
        """A probe ended without a verdict on the server (cancelled, or an error of its
        own request): let the next caller probe at once."""
        if ticket is Ticket.PROBE and self.state is State.HALF_OPEN:
            self.state = State.OPEN
            self.open_until = now


class OutageTooLong(ConnectionError):
    """The circuit stayed open past the caller's deadline (e.g. the consumer must poll).
    A ConnectionError, raised from the last outage: the batch runner retries it as
    transient and never dead-letters the alert for it."""


class CircuitGate:
    """Async callers through one breaker. `outage(exc)` says whether an exception means
    the dependency is unreachable (seconds to stay open at least) or is the request's own
    error (None: re-raised to the caller, the circuit is not blamed)."""

    def __init__(self, name: str, breaker: CircuitBreaker | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep) -> None:
        self.name = name
        self.breaker = breaker or CircuitBreaker()
        self._clock = clock
        self._sleep = sleep
        self._probe_done = asyncio.Event()
        self.outages = 0  # times the circuit opened (for tests and logs)
        self._last_outage: BaseException | None = None
        self._open_gauge = CIRCUIT_OPEN.labels(name)
        self._open_gauge.set(0)

    async def call(self, fn: Callable[[], Awaitable[T]],
                   outage: Callable[[BaseException], float | None], *,
                   deadline: float | None = None) -> T:
        while True:
            ticket = await self._turn(deadline)
            try:
                result = await fn()
            except asyncio.CancelledError:
                self.breaker.abandon(self._clock(), ticket)
                self._wake()
                raise
            except Exception as exc:
                hold = outage(exc)
                if hold is None:  # the server answered: this request's own error
                    self.breaker.abandon(self._clock(), ticket)
                    self._wake()
                    raise
                self._failed(ticket, exc, hold)
                continue
            if self.breaker.state is not State.CLOSED:
                log.info("circuit_closed", circuit=self.name,
                         paused_s=round(self._clock() - (self.breaker.opened_at or 0), 1))
            self.breaker.record_success()
            self._open_gauge.set(0)
            self._wake()
            return result

    async def _turn(self, deadline: float | None) -> Ticket:
        while True:
            now = self._clock()
            ticket = self.breaker.try_acquire(now)
            if ticket is not None:
                return ticket
            wait = self.breaker.wait_s(now)
            if deadline is not None and now + (wait or 0.0) > deadline:
                raise OutageTooLong(f"{self.name}: unreachable for "
                                    f"{now - (self.breaker.opened_at or now):.0f}s"
                                    ) from self._last_outage
            if wait is None:  # a probe is in flight: its outcome decides
                await self._probe_done.wait()
            else:
                await self._sleep(wait)

    def _failed(self, ticket: Ticket, exc: Exception, hold: float) -> None:
        self._last_outage = exc
        was_closed = self.breaker.state is State.CLOSED
        delay = self.breaker.record_failure(self._clock(), ticket, hold)
        self._open_gauge.set(1)
        if was_closed or ticket is Ticket.PROBE:
            if was_closed:
                self.outages += 1
            log.warning("circuit_open", circuit=self.name, error=type(exc).__name__,
                        detail=str(exc)[:200], retry_in_s=round(delay, 2),
                        failures=self.breaker.failures)
        self._wake()

    def _wake(self) -> None:
        """Wake the callers waiting for a probe's outcome."""
        self._probe_done.set()
        self._probe_done = asyncio.Event()
