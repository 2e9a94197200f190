"""Single-flight of storm de-duplication: who waits for a call in flight, and when."""

from __future__ import annotations

import asyncio

import numpy as np

from bench.common import storm_alerts
from bench.storm import near_storm_alerts
from pipeline.analysis.normalize import normalize
from pipeline.analysis.storm import InFlight
from pipeline.config import StormSettings
from schemas.messages import NormalizedAlert


def alerts(raw: list[bytes]) -> list[NormalizedAlert]:
    return [normalize(a, tenant_id="acme") for a in raw]


def vector(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


async def test_another_agent_of_the_incident_waits_for_the_call_in_flight() -> None:
    leader, follower, *_ = alerts(near_storm_alerts(3))
    assert leader.fingerprint != follower.fingerprint
    assert leader.incident_key == follower.incident_key
    flights = InFlight(StormSettings())
    assert flights.leader_for(follower, vector(1, 0)) is None
    before = flights.completions(follower)
    async with flights.lead(leader, vector(1, 0)) as flight:
        assert flights.leader_for(follower, vector(0.99, 0.05)) is flight
        # Not similar enough to reuse the verdict: no reason to wait.
        assert flights.leader_for(follower, vector(0.5, 0.5)) is None
        # No embedding: only the same fingerprint would reuse it.
        assert flights.leader_for(follower, None) is None
    assert flight.done.is_set() and flights.in_flight() == 0
    assert flights.leader_for(follower, vector(1, 0)) is None
    assert flights.completions(follower) == before + 1


async def test_same_fingerprint_waits_and_escalation_or_another_tenant_does_not() -> None:
    first, second = alerts(storm_alerts(2))
    assert first.fingerprint == second.fingerprint
    escalated = alerts(storm_alerts(1, seed=5, level=12))[0]
    other_tenant = normalize(storm_alerts(1)[0], tenant_id="other")
    flights = InFlight(StormSettings())
    async with flights.lead(first, None) as flight:
        assert flights.leader_for(second, None) is flight
        assert flights.leader_for(escalated, None) is None
        assert flights.leader_for(other_tenant, None) is None
        assert InFlight(StormSettings(enabled=False)).leader_for(second, None) is None


async def test_the_flight_ends_even_when_the_call_fails() -> None:
    leader, follower = alerts(near_storm_alerts(2))
    flights = InFlight(StormSettings())
    waiter: asyncio.Task[bool] | None = None
    try:
        async with flights.lead(leader, vector(1, 0)):
            flight = flights.leader_for(follower, vector(1, 0))
            assert flight is not None
            waiter = asyncio.create_task(flight.done.wait())
            raise RuntimeError("dead-lettered")
    except RuntimeError:
        pass
    assert waiter is not None and await asyncio.wait_for(waiter, 1)
    assert flights.in_flight() == 0
