"""The router's replicas: its pools as configured, an HTTP client per replica URL, and
the pools whose replicas come and go (membership.py) kept up to date in the background."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Mapping
from functools import partial

import structlog

from pipeline.router.config import PoolConfig
from pipeline.router.discovery import Discovery, build_discovery
from pipeline.router.dispatch import ReplicaClient
from pipeline.router.membership import PoolMembership
from pipeline.router.metrics import set_replica_counts
from pipeline.router.replicas import Pool, Replica

log = structlog.get_logger(__name__)


class Fleet:
    def __init__(self, pools: Mapping[str, PoolConfig], *, connect_timeout_s: float,
                 request_timeout_s: float,
                 discovery: Mapping[str, Discovery] | None = None) -> None:
        self.pools = [Pool(name, spec.max_context_tokens,
                           [Replica(url=url, pool=name, model_name=spec.models.get(url))
                            for url in spec.endpoints]
                           if spec.discovery == "static" else [],
                           priority_scheduling=spec.priority_scheduling,
                           traffic_split=dict(spec.traffic_split),
                           sticky_versions=spec.sticky_versions)
                      for name, spec in pools.items()]
        self._timeouts = (connect_timeout_s, request_timeout_s)
        # Each pool's relay gathering (PoolConfig.relay_gather_s, _max_s), by pool name.
        self._gathering = {name: (spec.relay_gather_s, spec.relay_gather_max_s)
                           for name, spec in pools.items()}
        self.clients = {r.url: self._client_for(r.url, p.name)
                        for p in self.pools for r in p.replicas}
        # Called with every replica URL after the pools changed (the picker scrapes those).
        self.on_change: Callable[[Collection[str]], None] = lambda urls: None
        # Pools whose replicas come and go: a configured non-static source, or one given
        # here (tests, tools). A static pool without one stays as configured.
        sources = dict(discovery or {})
        self._memberships: list[tuple[PoolMembership, float]] = []
        for pool in self.pools:
            spec = pools[pool.name]
            source = sources.get(pool.name)
            if source is None and spec.discovery != "static":
                source = build_discovery(spec.discovery, spec.endpoints)
            if source is not None:
                self._memberships.append((PoolMembership(
                    pool, source, probe=self._probe,
                    on_joining=partial(self._open_client, pool=pool.name),
                    on_forgotten=self._release_client), spec.refresh_s))
        self._discovery_started: asyncio.Task[None] | None = None
        self._refreshers: list[asyncio.Task[None]] = []
        # A pool without discovery never refreshes: its replicas are counted once, here,
        # so `secanalyst_llm_replicas` (and the dashboards' replica panels) covers it too.
        dynamic = {m.pool.name for m, _ in self._memberships}
        for pool in self.pools:
            if pool.name not in dynamic:
                set_replica_counts(pool.name, routed=len(pool.replicas), joining=0,
                                   draining=0)

    def _client_for(self, url: str, pool: str) -> ReplicaClient:
        connect_timeout_s, request_timeout_s = self._timeouts
        gather_s, gather_max_s = self._gathering[pool]
        return ReplicaClient(url, connect_timeout_s=connect_timeout_s,
                             request_timeout_s=request_timeout_s, gather_s=gather_s,
                             gather_max_s=gather_max_s)

    def _open_client(self, url: str, pool: str) -> None:
        if url not in self.clients:
            self.clients[url] = self._client_for(url, pool)

    async def _probe(self, url: str) -> str | None:
        return await self.clients[url].probe()

    async def _release_client(self, url: str) -> None:
        """Close a forgotten replica's client unless another pool still holds that URL."""
        if any(url in {r.url for r in p.replicas} for p in self.pools) or any(
                url in m.urls() for m, _ in self._memberships):
            return
        client = self.clients.pop(url, None)
        if client is not None:
            await client.close()
        self.on_change(list(self.clients))

    async def discover(self) -> None:
        """First refresh of every dynamic pool (so a DNS pool has replicas before its
        first request), then one refresher task per pool. Idempotent; runs in the loop."""
        if not self._memberships:
            return
        if self._discovery_started is None:
            self._discovery_started = asyncio.ensure_future(self._first_refresh())
        await asyncio.shield(self._discovery_started)

    async def _first_refresh(self) -> None:
        for membership, _ in self._memberships:
            try:
                await membership.refresh()
            except Exception:
                log.exception("membership_refresh_failed", pool=membership.pool.name)
        self.on_change(list(self.clients))
        self._refreshers = [asyncio.create_task(self._refresh_loop(m, interval),
                                                name=f"discovery-{m.pool.name}")
                            for m, interval in self._memberships]

    async def _refresh_loop(self, membership: PoolMembership, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await membership.refresh()
            except Exception:  # keep refreshing: the next round may succeed
                log.exception("membership_refresh_failed", pool=membership.pool.name)
            self.on_change(list(self.clients))

    async def readiness(self, now: float) -> tuple[bool, str]:
        """(ready, why): ready while some replica of some pool can take a request — its
        circuit closed (not failing requests) and its /health answering 2xx now."""
        replicas = [r for pool in self.pools for r in pool.replicas]
        open_circuits = {r.url for r in replicas if not r.circuit.allows(now)}
        probed = [r for r in replicas if r.url not in open_circuits]
        answers = await asyncio.gather(*(self.clients[r.url].probe() for r in probed))
        problems = {r.url: f"circuit open after {r.circuit.failures} failures"
                    for r in replicas if r.url in open_circuits}
        for replica, problem in zip(probed, answers, strict=True):
            if problem is None:
                return True, f"replica {replica.url} of pool {replica.pool!r} is healthy"
            problems[replica.url] = problem
        return False, "no healthy replica: " + "; ".join(
            f"{url}: {why}" for url, why in problems.items())

    async def close(self) -> None:
        for task in self._refreshers:
            task.cancel()
        for task in self._refreshers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._refreshers = []
        for client in self.clients.values():
            await client.close()
