"""The stage-wide circuit breaker, on a fake clock: open on an outage, capped exponential
back-off with jitter, one half-open probe, closed on success, no call while open."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from prometheus_client import REGISTRY

from pipeline.router import (
    ContextTooLong,
    NoHealthyReplica,
    RequestOverQuota,
    Saturated,
    UpstreamError,
)
from pipeline.stages.circuit import (
    Backoff,
    CircuitBreaker,
    CircuitGate,
    OutageTooLong,
    State,
    Ticket,
)
from pipeline.stages.explain import outage_hold_s


class FakeClock:
    """Time moves only when a caller sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Down(Exception):
    pass


class BadRequest(Exception):
    pass


def outage(exc: BaseException) -> float | None:
    return 0.0 if isinstance(exc, Down) else None


def test_backoff_doubles_to_the_cap_within_the_jitter() -> None:
    backoff = Backoff(base_s=1.0, cap_s=60.0, jitter=0.2)
    assert [backoff.delay(n, 0.5) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert backoff.delay(3, 0.0) == pytest.approx(3.2)  # 4 s − 20 %
    assert backoff.delay(3, 1.0) == pytest.approx(4.8)  # 4 s + 20 %
    assert backoff.delay(12, 1.0) == 60  # never above the cap


def test_breaker_opens_probes_once_and_closes_on_success() -> None:
    breaker = CircuitBreaker(Backoff(jitter=0.0))
    assert breaker.try_acquire(0.0) is Ticket.NORMAL
    assert breaker.record_failure(0.0, Ticket.NORMAL) == 1.0
    assert breaker.state is State.OPEN
    assert breaker.try_acquire(0.5) is None and breaker.wait_s(0.5) == 0.5
    # Calls already in flight when it opened do not escalate the back-off.
    breaker.record_failure(0.6, Ticket.NORMAL)
    assert breaker.failures == 1 and breaker.open_until == 1.0
    assert breaker.try_acquire(1.0) is Ticket.PROBE
    assert breaker.state is State.HALF_OPEN
    assert breaker.try_acquire(1.1) is None and breaker.wait_s(1.1) is None  # one probe
    assert breaker.record_failure(1.2, Ticket.PROBE) == 2.0  # probe failed: 2 s
    assert breaker.try_acquire(3.1) is None
    assert breaker.try_acquire(3.2) is Ticket.PROBE
    breaker.record_success()
    assert breaker.state is State.CLOSED and breaker.failures == 0
    assert breaker.try_acquire(3.3) is Ticket.NORMAL


def test_a_router_hint_holds_the_circuit_at_least_that_long() -> None:
    breaker = CircuitBreaker(Backoff(jitter=0.0))
    assert breaker.record_failure(0.0, Ticket.NORMAL, at_least_s=7.5) == 7.5
    assert breaker.try_acquire(7.0) is None


def test_an_abandoned_probe_lets_the_next_caller_probe() -> None:
    breaker = CircuitBreaker(Backoff(jitter=0.0))
    breaker.record_failure(0.0, Ticket.NORMAL)
    assert breaker.try_acquire(1.0) is Ticket.PROBE
    breaker.abandon(1.5, Ticket.PROBE)
    assert breaker.try_acquire(1.5) is Ticket.PROBE


async def test_gate_makes_no_call_while_open_and_backs_off_exponentially() -> None:
    clock = FakeClock()
    gate = CircuitGate("model", CircuitBreaker(Backoff(jitter=0.0)), clock=clock,
                       sleep=clock.sleep)
    calls: list[float] = []

    async def flaky() -> str:
        calls.append(clock.now)
        if len(calls) <= 5:
            raise Down("connection refused")
        return "ok"

    assert await gate.call(flaky, outage) == "ok"
    # One call per back-off step, nothing in between: 1, 2, 4, 8, 16 s apart.
    assert [b - a for a, b in itertools.pairwise(calls)] == [1, 2, 4, 8, 16]
    assert gate.breaker.state is State.CLOSED and gate.outages == 1


async def test_gate_waiters_wait_for_the_probe_and_all_go_when_it_succeeds() -> None:
    clock = FakeClock()
    gate = CircuitGate("model", CircuitBreaker(Backoff(jitter=0.0)), clock=clock,
                       sleep=clock.sleep)
    up = False
    calls = 0

    async def call() -> int:
        nonlocal calls
        calls += 1
        if not up:
            raise Down("no healthy replica")
        await asyncio.sleep(0)
        return calls

    first = asyncio.create_task(gate.call(call, outage))
    await asyncio.sleep(0)
    assert gate.breaker.state is State.OPEN
    waiters = [asyncio.create_task(gate.call(call, outage)) for _ in range(10)]
    for _ in range(20):  # let them all reach the gate; only probes get through
        await asyncio.sleep(0)
    assert calls <= 1 + len(clock.sleeps)  # one call per back-off step, not per caller
    up = True
    results = await asyncio.gather(first, *waiters)
    assert len(results) == 11 and gate.breaker.state is State.CLOSED


async def test_gate_exports_whether_its_circuit_is_open() -> None:
    clock = FakeClock()
    gate = CircuitGate("gauge_test", CircuitBreaker(Backoff(jitter=0.0)), clock=clock,
                       sleep=clock.sleep)

    def exported() -> float | None:
        return REGISTRY.get_sample_value("secanalyst_circuit_open", {"circuit": "gauge_test"})

    assert exported() == 0
    seen_while_down: list[float | None] = []

    async def flaky() -> str:
        if len(seen_while_down) < 3:
            seen_while_down.append(exported())
            raise Down("connection refused")
        return "ok"

    assert await gate.call(flaky, outage) == "ok"
    assert seen_while_down == [0, 1, 1]  # open from the first outage until the probe passes
    assert exported() == 0


async def test_gate_reraises_a_request_error_without_opening() -> None:
    clock = FakeClock()
    gate = CircuitGate("model", clock=clock, sleep=clock.sleep)

    async def rejected() -> None:
        raise BadRequest("400")

    with pytest.raises(BadRequest):
        await gate.call(rejected, outage)
    assert gate.breaker.state is State.CLOSED and not clock.sleeps


async def test_gate_gives_up_at_the_deadline() -> None:
    clock = FakeClock()
    gate = CircuitGate("model", CircuitBreaker(Backoff(jitter=0.0, cap_s=60)), clock=clock,
                       sleep=clock.sleep)

    async def down() -> None:
        raise Down("refused")

    with pytest.raises(OutageTooLong) as raised:
        await gate.call(down, outage, deadline=clock.now + 100)
    assert isinstance(raised.value.__cause__, Down)  # the batch runner sees the outage
    assert clock.now <= 1000.0 + 100  # never slept past the deadline


def test_explain_counts_only_unreachable_servers_as_outages() -> None:
    """An outage opens the circuit (and never dead-letters); a request's own error is the
    request's (dead letter)."""
    assert outage_hold_s(NoHealthyReplica("none left")) == 0.0
    assert outage_hold_s(Saturated(4.5)) == 4.5
    assert outage_hold_s(UpstreamError("stream interrupted")) == 0.0
    assert outage_hold_s(UpstreamError("bad gateway", upstream_status=502)) == 0.0
    assert outage_hold_s(UpstreamError("rate limited", upstream_status=429)) == 0.0
    assert outage_hold_s(UpstreamError("bad request", upstream_status=400)) is None
    assert outage_hold_s(ContextTooLong(9000, 8192)) is None
    assert outage_hold_s(RequestOverQuota("acme", 9000, 2500)) is None
