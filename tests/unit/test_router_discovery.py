"""Replicas that come and go: discovery sources and the reconciliation of a pool's replicas
(add once /health passes, remove with requests in flight, re-add)."""

from __future__ import annotations

import socket

import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from pipeline.router.config import PoolConfig
from pipeline.router.discovery import (
    DiscoveryError,
    DnsDiscovery,
    StaticDiscovery,
    build_discovery,
)
from pipeline.router.membership import PoolMembership
from pipeline.router.replicas import Pool, Replica

A, B, C = "http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1", "http://10.0.0.3:8000/v1"


def replicas_gauge(state: str, pool: str = "default") -> float | None:
    return REGISTRY.get_sample_value("secanalyst_llm_replicas",
                                     {"pool": pool, "state": state})


class Harness:
    """A pool, a static source the test changes, and health answers the test decides."""

    def __init__(self, *initial: str) -> None:
        self.pool = Pool("default", 4096, [Replica(url=u, pool="default") for u in initial])
        self.source = StaticDiscovery(initial)
        self.unhealthy: set[str] = set()
        self.opened: list[str] = []
        self.forgotten: list[str] = []
        self.membership = PoolMembership(self.pool, self.source, probe=self._probe,
                                         on_joining=self.opened.append,
                                         on_forgotten=self._forget)

    async def _probe(self, url: str) -> str | None:
        return "/health answered 503" if url in self.unhealthy else None

    async def _forget(self, url: str) -> None:
        self.forgotten.append(url)

    @property
    def routed(self) -> list[str]:
        return [r.url for r in self.pool.replicas]


async def test_a_new_endpoint_gets_traffic_once_its_health_passes() -> None:
    h = Harness(A)
    h.unhealthy.add(B)
    h.source.set([A, B])
    await h.membership.refresh()
    assert h.routed == [A]  # not yet: /health fails (still loading the model)
    assert list(h.membership.joining) == [B] and h.opened == [B]
    assert replicas_gauge("joining") == 1 and replicas_gauge("routed") == 1
    h.unhealthy.clear()
    await h.membership.refresh()
    assert h.routed == [A, B]
    assert not h.membership.joining
    assert replicas_gauge("joining") == 0 and replicas_gauge("routed") == 2


async def remove_b(h: Harness, in_flight: int) -> Replica:
    """B, with `in_flight` requests running, vanishes from the source (one refresh)."""
    leaving = h.pool.replicas[1]
    leaving.in_flight_requests = in_flight
    h.source.set([A])
    await h.membership.refresh()
    return leaving


async def test_a_vanished_endpoint_leaves_at_once_and_is_forgotten_after_its_requests() -> None:
    h = Harness(A, B)
    leaving = await remove_b(h, in_flight=2)
    assert h.routed == [A]  # no new request goes to B from now on
    assert h.membership.draining == {B: leaving}
    await h.membership.refresh()
    assert h.forgotten == []  # its requests are still running: its client must stay
    leaving.in_flight_requests = 0
    await h.membership.refresh()
    assert h.forgotten == [B] and not h.membership.draining


async def test_a_drained_endpoint_is_kept_one_refresh_for_requests_on_their_way() -> None:
    h = Harness(A, B)
    h.source.set([A])
    await h.membership.refresh()
    assert h.forgotten == [] and B in h.membership.draining
    await h.membership.refresh()
    assert h.forgotten == [B]


async def test_an_endpoint_back_while_draining_returns_as_it_was() -> None:
    h = Harness(A, B)
    replica_b = await remove_b(h, in_flight=1)
    h.unhealthy.add(B)  # not probed again: it never stopped serving
    h.source.set([A, B])
    await h.membership.refresh()
    assert h.routed == [A, B] and h.pool.replicas[1] is replica_b
    assert not h.membership.draining and h.forgotten == [] and h.opened == []


async def test_an_endpoint_back_after_removal_joins_anew() -> None:
    h = Harness(A, B)
    h.source.set([A])
    await h.membership.refresh()
    await h.membership.refresh()
    assert h.forgotten == [B]
    h.source.set([A, B])
    await h.membership.refresh()
    assert h.routed == [A, B] and h.opened == [B]


async def test_a_joining_endpoint_that_vanishes_is_forgotten_without_traffic() -> None:
    h = Harness(A)
    h.unhealthy.add(C)
    h.source.set([A, C])
    await h.membership.refresh()
    h.source.set([A])
    await h.membership.refresh()
    assert h.routed == [A] and h.forgotten == [C] and not h.membership.joining


async def test_a_failed_lookup_keeps_the_replicas() -> None:
    async def broken(host: str, port: int) -> list[str]:
        raise socket.gaierror(-2, "Name or service not known")

    pool = Pool("default", 4096, [Replica(url=A, pool="default")])

    async def healthy(url: str) -> str | None:
        return None

    async def forget(url: str) -> None:
        raise AssertionError("nothing is forgotten on a failed lookup")

    membership = PoolMembership(pool, DnsDiscovery("http://vllm.ns.svc:8000/v1",
                                                   resolve=broken),
                                probe=healthy, on_joining=lambda url: None,
                                on_forgotten=forget)
    await membership.refresh()
    await membership.refresh()
    assert [r.url for r in pool.replicas] == [A]


async def test_dns_gives_one_endpoint_per_address() -> None:
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return ["10.0.0.2", "10.0.0.1", "10.0.0.2", "fd00::7"]  # one per socket type too

    source = DnsDiscovery("http://vllm-default.secanalyst-llm.svc:8000/v1", resolve=resolve)
    assert await source.endpoints() == [A, B, "http://[fd00::7]:8000/v1"]
    assert asked == [("vllm-default.secanalyst-llm.svc", 8000)]


async def test_dns_lookup_failure_is_a_discovery_error() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        raise socket.gaierror(-2, "Name or service not known")

    with pytest.raises(DiscoveryError, match=r"vllm\.ns\.svc"):
        await DnsDiscovery("http://vllm.ns.svc/v1", resolve=resolve).endpoints()


async def test_dns_resolves_a_real_name_with_the_loop() -> None:
    endpoints = await DnsDiscovery("http://localhost:8123/v1").endpoints()
    assert "http://127.0.0.1:8123/v1" in endpoints


def test_dns_discovery_takes_one_service_url() -> None:
    with pytest.raises(ValidationError, match="exactly one endpoint"):
        PoolConfig(endpoints=[A, B], discovery="dns")
    with pytest.raises(ValueError, match="host name"):
        build_discovery("dns", ["http:///v1"])
    pool = PoolConfig(endpoints=["http://vllm.ns.svc:8000/v1"], discovery="dns", refresh_s=2)
    assert isinstance(build_discovery(pool.discovery, pool.endpoints), DnsDiscovery)


def test_a_static_pool_counts_its_configured_replicas_in_the_gauge() -> None:
    # Without discovery nothing refreshes the pool: the gauge (and the dashboards'
    # "Healthy replicas") must still count it, or every static deployment shows none.
    from pipeline.router.fleet import Fleet

    Fleet({"static-pool-gauge": PoolConfig(endpoints=[A, B, C], max_context_tokens=4096)},
          connect_timeout_s=1.0, request_timeout_s=1.0)
    assert replicas_gauge("routed", "static-pool-gauge") == 3
    assert replicas_gauge("joining", "static-pool-gauge") == 0
    assert replicas_gauge("draining", "static-pool-gauge") == 0
