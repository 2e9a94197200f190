"""Keeps a pool's replicas in step with its discovery source (discovery.py).

Each refresh, in this order:
1. reap: a replica that left the pool at an earlier refresh and has no request in flight
   is forgotten (its client closed). Waiting one refresh covers a request that was given
   the replica just before it left and is still on its way to counting itself in flight.
2. reconcile with the source's list: a vanished endpoint leaves `pool.replicas` at once
   (no new request goes there) and drains; a new one joins the `joining` set; one that
   comes back while draining returns to the pool as it was (its health is known).
3. admit: each joining endpoint whose /health answers 2xx enters `pool.replicas`.

`pool.replicas` is replaced, never edited in place, so a picker iterating it never sees
it change under it. A failed lookup keeps the replicas as they are. The counts by state
are the gauge `secanalyst_llm_replicas{pool, state}`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from pipeline.router.discovery import Discovery, DiscoveryError
from pipeline.router.metrics import set_replica_counts
from pipeline.router.replicas import Pool, Replica

log = structlog.get_logger(__name__)

# base URL → None when its /health answers 2xx, else why not.
Probe = Callable[[str], Awaitable[str | None]]


class PoolMembership:
    def __init__(self, pool: Pool, discovery: Discovery, *, probe: Probe,
                 on_joining: Callable[[str], None],
                 on_forgotten: Callable[[str], Awaitable[None]]) -> None:
        self.pool = pool
        self._discovery = discovery
        self._probe = probe
        self._on_joining = on_joining  # e.g. open a client for it (needed to probe it)
        self._on_forgotten = on_forgotten
        self.joining: dict[str, Replica] = {}
        self.draining: dict[str, Replica] = {}

    def urls(self) -> set[str]:
        """Every endpoint this pool still holds something for (routed, joining, draining)."""
        return {r.url for r in self.pool.replicas} | set(self.joining) | set(self.draining)

    async def refresh(self) -> None:
        await self._reap()
        try:
            wanted = await self._discovery.endpoints()
        except DiscoveryError as exc:
            log.warning("discovery_failed", pool=self.pool.name, error=str(exc))
        else:
            await self.reconcile(wanted)
        await self._admit()
        set_replica_counts(self.pool.name, routed=len(self.pool.replicas),
                           joining=len(self.joining), draining=len(self.draining))

    async def reconcile(self, wanted: list[str]) -> None:
        wanted_set = set(wanted)
        routed = {r.url for r in self.pool.replicas}
        kept = [r for r in self.pool.replicas if r.url in wanted_set]
        for replica in self.pool.replicas:
            if replica.url not in wanted_set:
                self.draining[replica.url] = replica
                log.info("replica_draining", pool=self.pool.name, replica=replica.url,
                         in_flight=replica.in_flight_requests)
        for url in [u for u in self.joining if u not in wanted_set]:
            del self.joining[url]  # never routed to: nothing to drain
            await self._forget(url)
        for url in wanted:
            if url in routed or url in self.joining:
                continue
            back = self.draining.pop(url, None)
            if back is not None:
                kept.append(back)
                log.info("replica_back", pool=self.pool.name, replica=url)
            else:
                self.joining[url] = Replica(url=url, pool=self.pool.name)
                self._on_joining(url)
                log.info("replica_joining", pool=self.pool.name, replica=url)
        self.pool.replicas = kept

    async def _admit(self) -> None:
        if not self.joining:
            return
        joining = list(self.joining.values())
        answers = await asyncio.gather(*(self._probe(r.url) for r in joining))
        admitted = []
        for replica, problem in zip(joining, answers, strict=True):
            if problem is None and self.joining.get(replica.url) is replica:
                del self.joining[replica.url]
                admitted.append(replica)
                log.info("replica_joined", pool=self.pool.name, replica=replica.url)
        if admitted:
            self.pool.replicas = [*self.pool.replicas, *admitted]

    async def _reap(self) -> None:
        for url, replica in list(self.draining.items()):
            if replica.in_flight_requests <= 0:
                del self.draining[url]
                await self._forget(url)
                log.info("replica_removed", pool=self.pool.name, replica=url)

    async def _forget(self, url: str) -> None:
        try:
            await self._on_forgotten(url)
        except Exception:  # a failing close must not stop the refresher
            log.exception("replica_forget_failed", pool=self.pool.name, replica=url)

