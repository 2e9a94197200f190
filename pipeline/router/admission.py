"""Priority admission: a request is dispatched when its pool has room, else it waits in a
bounded router-side queue ordered by class, round-robin between tenants of a class.

Room: each replica takes `max_in_flight_per_replica` requests from this router; a pool
has room while fewer than that times its healthy replicas are admitted (with a
least-loaded picker some replica then has room). Token-aware too, when
`max_prefill_tokens_per_replica` is set: a request is admitted only while some healthy
replica has less queued prefill (`Replica.pending_prefill_tokens`: the router's prompt
tokens there not yet past their first token) than that, not counting replicas taken by
requests admitted and not yet sent (`SlotHandle.dispatched()`). Prefill is serial on a
replica, so this keeps requests in the router's queue (ordered by class), ready for the
replica that frees first, instead of queued behind a long prompt on one replica; a first
token (`SlotHandle.prefilled()`) hands the room on. The limit is on the work queued, not
on the request's own size, so a long prompt cannot starve. A pool with no healthy replica
admits at once, so the picker fails fast with `NoHealthyReplica` instead of the request
waiting.

Order: premium > standard > batch (batch = backfill). Within a class the tenants take
turns (round-robin over tenants with waiters, FIFO within a tenant), so one tenant's
burst cannot starve another's requests. A freed slot is handed straight to the next
waiter, so no newcomer can overtake the queue.

Refusals, never a stall: a full queue (unless a lower-class waiter can be evicted to make
room), or a wait that would outlast the request's deadline (or `max_wait_s`), raises
`Saturated(retry_after)`. `retry_after` = (requests queued at or above this class + 1) /
drain rate, where the drain rate = pool capacity / mean slot hold time (an exponential
moving average of observed holds; 1 s before the first is observed).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog

from pipeline.router.errors import Saturated
from pipeline.router.replicas import Pool

log = structlog.get_logger(__name__)

CLASSES = ("premium", "standard", "batch")
INITIAL_HOLD_S = 1.0
HOLD_EWMA_ALPHA = 0.2
MIN_RETRY_AFTER_S = 0.05
MAX_RETRY_AFTER_S = 300.0


def effective_priority(tenant_class: str, requested: str) -> str:
    """The class a request is admitted in: its tenant's class, demoted to batch when the
    request itself is batch (backfill). A request never promotes itself."""
    if requested == "batch":
        return "batch"
    return tenant_class if tenant_class in CLASSES else "standard"


@dataclass(eq=False)
class _Waiter:
    tenant_id: str
    priority: str
    future: asyncio.Future[None]


@dataclass
class _PoolQueue:
    in_flight: int = 0
    queued: int = 0
    undispatched: int = 0  # admitted, no replica chosen yet
    mean_hold_s: float = INITIAL_HOLD_S
    # class → tenant → its waiters; the OrderedDict's order is the round-robin turn.
    waiting: dict[str, OrderedDict[str, deque[_Waiter]]] = field(
        default_factory=lambda: {c: OrderedDict() for c in CLASSES})

    def ahead_of(self, priority: str) -> int:
        rank = CLASSES.index(priority)
        return sum(len(q) for c in CLASSES[:rank + 1] for q in self.waiting[c].values())


class SlotHandle:
    """What the holder of a slot reports: `dispatched()` once its request is sent to a
    replica (whose `pending_prefill_tokens` now count it), `prefilled()` at its first
    token (that replica's prefill queue shrank: room for a waiter)."""

    def __init__(self, admission: Admission, state: _PoolQueue, pool: Pool) -> None:
        self._admission = admission
        self._state = state
        self._pool = pool
        self._undispatched = True

    def dispatched(self) -> None:
        if self._undispatched:
            self._undispatched = False
            self._state.undispatched -= 1

    def prefilled(self) -> None:
        self._admission._pump(self._state, self._pool)


class Admission:
    def __init__(self, *, max_in_flight_per_replica: int = 16, max_queue: int = 256,
                 max_wait_s: float = 30.0, max_prefill_tokens_per_replica: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_in_flight_per_replica < 1 or max_queue < 0:
            raise ValueError("max_in_flight_per_replica must be ≥ 1 and max_queue ≥ 0")
        if max_prefill_tokens_per_replica is not None and max_prefill_tokens_per_replica < 1:
            raise ValueError("max_prefill_tokens_per_replica must be ≥ 1 (or None: off)")
        # The configured limits are for all the routers sharing the replicas together;
        # this one applies its share of them (set_share; alone: all of them).
        self._limits = (max_in_flight_per_replica, max_prefill_tokens_per_replica, max_queue)
        self._per_replica = max_in_flight_per_replica
        self._prefill_per_replica = max_prefill_tokens_per_replica
        self._max_queue = max_queue
        self._max_wait_s = max_wait_s
        self._clock = clock
        self._pools: dict[str, _PoolQueue] = {}
        self._pool_refs: dict[str, Pool] = {}  # to hand out room a larger share makes
        self.routers = 1

    def set_share(self, routers: int) -> None:
        """This router's part of the limits while `routers` router processes share the
        replicas (gateway replicas and explain stages: peers.py counts them): slots and
        queued prefill per replica, and the queue, each divided by `routers`, rounded up,
        so that together they hold a replica to about what one router alone would. A
        larger share admits waiters at once; a smaller one admits nobody new until the
        requests in flight are under it."""
        routers = max(1, routers)
        per_replica, prefill, queue = self._limits
        self._per_replica = -(-per_replica // routers)
        self._prefill_per_replica = None if prefill is None else -(-prefill // routers)
        self._max_queue = -(-queue // routers)
        if routers != self.routers:
            log.info("admission_share", routers=routers, per_replica=self._per_replica,
                     max_queue=self._max_queue)
        self.routers = routers
        for name, state in self._pools.items():
            if name in self._pool_refs:
                self._pump(state, self._pool_refs[name])

    @asynccontextmanager
    async def slot(self, pool: Pool, priority: str, tenant_id: str,
                   deadline: float | None = None) -> AsyncIterator[SlotHandle]:
        """Hold one dispatch slot of `pool` for the body. `deadline` is on the admission's
        clock (`time.monotonic` by default); the wait never exceeds `max_wait_s` either."""
        state = self._pools.setdefault(pool.name, _PoolQueue())
        self._pool_refs[pool.name] = pool
        await self._acquire(state, pool, priority if priority in CLASSES else "standard",
                            tenant_id, deadline)
        handle = SlotHandle(self, state, pool)
        held_from = self._clock()
        try:
            yield handle
        finally:
            hold = self._clock() - held_from
            state.mean_hold_s += HOLD_EWMA_ALPHA * (hold - state.mean_hold_s)
            handle.dispatched()
            self._release(state, pool)

    def snapshot(self, pool_name: str) -> tuple[int, int]:
        """(admitted, queued) for a pool; for metrics and tests."""
        state = self._pools.get(pool_name)
        return (state.in_flight, state.queued) if state else (0, 0)

    def would_refuse(self, pool: Pool, priority: str,
                     wait_budget_s: float | None = None) -> Saturated | None:
        """A cheap look before the costly work (parsing, counting tokens): the refusal a
        request of `priority` would get now, or None. Refused: the queue is full with
        no lower-class waiter to evict, or the expected wait ((queued ahead + 1) / drain
        rate) is longer than `wait_budget_s`."""
        state = self._pools.get(pool.name)
        priority = priority if priority in CLASSES else "standard"
        if state is None:
            return None
        self._pump(state, pool)
        if state.queued == 0 and state.in_flight < self._capacity(pool):
            return None
        rank = CLASSES.index(priority)
        can_evict = any(state.waiting[c] for c in CLASSES[rank + 1:])
        if state.queued >= self._max_queue and not can_evict:
            return self._refuse(state, pool, priority, "shed_full")
        if wait_budget_s is not None and not can_evict \
                and self._expected_wait(state, pool, priority) > wait_budget_s:
            return self._refuse(state, pool, priority, "shed_slow")
        return None

    async def _acquire(self, state: _PoolQueue, pool: Pool, priority: str, tenant_id: str,
                       deadline: float | None) -> None:
        self._pump(state, pool)
        if state.queued == 0 and self._has_room(state, pool):
            state.in_flight += 1
            state.undispatched += 1
            return
        now = self._clock()
        wait_s = self._max_wait_s if deadline is None else min(self._max_wait_s,
                                                                 deadline - now)
        if wait_s <= 0:
            raise self._refuse(state, pool, priority, "deadline")
        if state.queued >= self._max_queue and not self._evict_below(state, pool, priority):
            raise self._refuse(state, pool, priority, "queue_full")
        waiter = _Waiter(tenant_id, priority, asyncio.get_running_loop().create_future())
        state.waiting[priority].setdefault(tenant_id, deque()).append(waiter)
        state.queued += 1
        try:
            await asyncio.wait([waiter.future], timeout=wait_s)
        except asyncio.CancelledError:
            if waiter.future.done() and not waiter.future.cancelled() \
                    and waiter.future.exception() is None:
                state.undispatched -= 1
                self._release(state, pool)  # granted as we were cancelled: pass it on
            else:
                self._remove(state, waiter)
            raise
        if waiter.future.done():
            waiter.future.result()  # granted, or raises Saturated if evicted
            return
        self._remove(state, waiter)
        raise self._refuse(state, pool, priority, "deadline")

    def _release(self, state: _PoolQueue, pool: Pool) -> None:
        state.in_flight -= 1
        self._pump(state, pool)

    def _pump(self, state: _PoolQueue, pool: Pool) -> None:
        """Hand free slots to the next waiters, best class first, tenants in turn."""
        while state.queued and self._has_room(state, pool):
            waiter = self._pop_next(state)
            state.in_flight += 1
            state.undispatched += 1
            waiter.future.set_result(None)

    def _pop_next(self, state: _PoolQueue) -> _Waiter:
        for priority in CLASSES:
            tenants = state.waiting[priority]
            if tenants:
                tenant_id, waiters = next(iter(tenants.items()))
                waiter = waiters.popleft()
                if waiters:
                    tenants.move_to_end(tenant_id)  # next turn goes to another tenant
                else:
                    del tenants[tenant_id]
                state.queued -= 1
                return waiter
        raise AssertionError("queued > 0 but no waiter")

    def _evict_below(self, state: _PoolQueue, pool: Pool, priority: str) -> bool:
        """Make room for `priority` by refusing the newest waiter of the lowest class below
        it (from the tenant with the most waiters there). False when there is none."""
        rank = CLASSES.index(priority)
        for lower in reversed(CLASSES[rank + 1:]):
            tenants = state.waiting[lower]
            if tenants:
                tenant_id = max(tenants, key=lambda t: len(tenants[t]))
                victim = tenants[tenant_id][-1]
                self._remove(state, victim)
                victim.future.set_exception(self._refuse(state, pool, lower, "evicted"))
                return True
        return False

    def _remove(self, state: _PoolQueue, waiter: _Waiter) -> None:
        tenants = state.waiting[waiter.priority]
        waiters = tenants.get(waiter.tenant_id)
        if waiters is not None and waiter in waiters:
            waiters.remove(waiter)
            state.queued -= 1
            if not waiters:
                del tenants[waiter.tenant_id]

    def _has_room(self, state: _PoolQueue, pool: Pool) -> bool:
        capacity = self._capacity(pool)
        if state.in_flight >= capacity:
            return False
        if self._prefill_per_replica is None or capacity >= 1 << 30:
            return True
        now = time.monotonic()
        free = sum(1 for r in pool.replicas if r.circuit.allows(now)
                   and r.pending_prefill_tokens < self._prefill_per_replica)
        return free > state.undispatched

    def _capacity(self, pool: Pool) -> int:
        now = time.monotonic()
        healthy = sum(1 for r in pool.replicas if r.circuit.allows(now))
        if healthy == 0:
            return 1 << 30  # admit: the picker raises NoHealthyReplica at once
        return healthy * self._per_replica

    def _expected_wait(self, state: _PoolQueue, pool: Pool, priority: str) -> float:
        capacity = min(self._capacity(pool), max(state.in_flight, 1))
        drain_per_s = capacity / max(state.mean_hold_s, 1e-3)
        return (state.ahead_of(priority) + 1) / drain_per_s

    def _refuse(self, state: _PoolQueue, pool: Pool, priority: str, reason: str) -> Saturated:
        retry_after = self._expected_wait(state, pool, priority)
        retry_after = min(max(retry_after, MIN_RETRY_AFTER_S), MAX_RETRY_AFTER_S)
        log.info("admission_refused", pool=pool.name, priority=priority, reason=reason,
                 in_flight=state.in_flight, queued=state.queued, retry_after=retry_after)
        return Saturated(retry_after, reason)
