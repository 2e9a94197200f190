"""Usage events leave the request path at once: a bounded buffer drained in batches.

Every request dispatched to a replica is metered twice over one row: a reservation
(`in_flight`, estimated prompt tokens) written *before* the request is sent — so a process
killed mid-call leaves a row that the next start settles as `abandoned` — and the final
event, which settles that row in place (same id and created_at; an upsert). Reservations
are group-committed: `reserve` waits (at most `reserve_wait_s`) for the batch holding it,
and a batch is written as soon as a reservation is queued, so concurrent requests share
one round trip, without waiting for the WAL flush. Final events wait for the next
`interval_s` tick. A reservation and its final event in one batch collapse into one row
write, and a final event whose reservation is still queued (its wait ran out while the
database was slow) takes its place: the row is written once, final.

While a request runs, its running counts (router/progress.py) update its in-flight row
at each tick (only while the row is still in flight), so the row a killed process leaves
holds the output streamed up to then, not only the prompt estimate.

Refusals (`dispatched=False`) are not stored: metrics count them (router/metrics.py). One
that follows a reservation (every replica failed to connect) deletes the reserved row.

When PostgreSQL is slow the buffer fills up to `max_pending` events; then a new request
waits for room before its reservation is queued (back-pressure on dispatch), so memory
stays bounded and no event is dropped for want of room (bench/usage_events.py measures
the rate and a slow phase; tests/unit/test_usage_writer.py the bound).
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import structlog

from pipeline.router.tasks import cancel_and_wait
from schemas.usage import UsageEvent

log = structlog.get_logger(__name__)


class UsageSink(Protocol):
    def record(self, event: UsageEvent) -> None: ...


@runtime_checkable
class ReservingUsageSink(Protocol):
    """A sink that can make a row durable before the request it meters is sent."""

    def record(self, event: UsageEvent) -> None: ...

    async def reserve(self, event: UsageEvent) -> None: ...


@dataclass
class UsageBatch:
    """One write: rows to insert-or-settle (by id and created_at), rows to delete, and
    running counts of rows still in flight."""

    upserts: list[UsageEvent] = field(default_factory=list)
    deletes: list[UsageEvent] = field(default_factory=list)
    progress: list[UsageEvent] = field(default_factory=list)

    @property
    def only_reservations(self) -> bool:
        """Nothing settled: only rows guarding against a crash of the writing process."""
        return not self.deletes and all(e.status_code is None for e in self.upserts)


class UsageStore(Protocol):
    async def write(self, batch: UsageBatch) -> None: ...

    async def settle_abandoned(self, older_than_s: float) -> int:
        """Settle in-flight rows older than this as abandoned; the number settled."""
        ...


@dataclass(slots=True)
class _Item:
    event: UsageEvent
    done: asyncio.Future[None] | None = None  # a reservation's waiter


class BatchingUsageWriter:
    """Collects events and writes them to `store` in batches of at most `batch_size`,
    up to `concurrent_writes` batches at a time: final events every `interval_s`,
    reservations at once. The buffer is bounded: once `max_pending` events wait or are
    being written, `reserve` waits for room (back-pressure on new dispatches, counted in
    `backpressure_waits`) — nothing is dropped for want of room. `record` never blocks:
    every final event belongs to a request that reserved its row, so the room taken
    by reservations bounds final events too (a hard limit of twice `max_pending` guards
    against a caller that records without reserving: over it an event is dropped,
    counted and logged). Once its row is queued, `reserve` waits for its write at most
    `reserve_wait_s` (metering must not stop serving when the database is slow: the row
    stays queued and is written later)."""

    def __init__(self, store: UsageStore, *, batch_size: int = 2000,
                 interval_s: float = 0.5, max_pending: int = 50_000,
                 reserve_wait_s: float = 2.0, concurrent_writes: int = 2,
                 abandoned_after_s: float | None = None) -> None:
        self._store = store
        # Reservations apart, by a task of their own: a request waits for its own, so they
        # are written as soon as they come, never behind a batch of final events (and
        # without waiting for the WAL flush: see pipeline/store/usage.py). A reservation
        # written late never overwrites its row's final event (the store's upsert).
        self._reservations: deque[_Item] = deque()
        self._queue: deque[_Item] = deque()
        self._batch_size = batch_size
        self._interval_s = interval_s
        self._max_pending = max_pending
        self._reserve_wait_s = reserve_wait_s
        self._abandoned_after_s = abandoned_after_s
        self._slots = asyncio.Semaphore(concurrent_writes)
        self._wake = asyncio.Event()
        self._group: list[asyncio.Future[None]] = []  # reservations under one timer
        self._room = asyncio.Event()
        self._room.set()
        self._reserved: set[uuid.UUID] = set()  # reserved rows not settled yet
        # Reservations queued and not yet taken into a batch: a final event for one of
        # them takes its place (one row write, final, instead of an insert and an update).
        self._unwritten: dict[uuid.UUID, _Item] = {}
        self._progress: dict[uuid.UUID, UsageEvent] = {}  # latest running counts per row
        self._started: set[uuid.UUID] = set()  # reserved rows whose first token was seen
        self._tasks: list[asyncio.Task[None]] = []
        self._writes: set[asyncio.Task[None]] = set()
        self.depth = 0  # events queued or being written
        self.max_depth = 0
        self.backpressure_waits = 0
        self.dropped = 0
        self.abandoned_settled = 0

    def record(self, event: UsageEvent) -> None:
        if not event.dispatched and event.id not in self._reserved:
            return  # a refusal: metrics only
        if (queued := self._unwritten.pop(event.id, None)) is not None:
            # Its request ended before its row was written (a slow database; the
            # reservation's wait ran out): the row is written once, final — or, for a
            # refusal, never.
            queued.event = event
            return
        if self.depth >= 2 * self._max_pending:
            self.dropped += 1
            log.error("usage_event_dropped", tenant_id=event.tenant_id,
                      reason="buffer full", depth=self.depth)
            return
        self._queue.append(_Item(event))
        self._grew(1)

    async def reserve(self, event: UsageEvent) -> None:
        if self.depth >= self._max_pending:
            self.backpressure_waits += 1
            while self.depth >= self._max_pending:
                self._room.clear()
                await self._room.wait()
        done = asyncio.get_running_loop().create_future()
        item = _Item(event, done)
        self._reservations.append(item)
        self._unwritten[event.id] = item
        self._grew(1)
        self._reserved.add(event.id)
        self._wake.set()
        self._wait_at_most(done)
        await done

    def _wait_at_most(self, done: asyncio.Future[None]) -> None:
        """One timer per group of reservations queued together, not one per request
        (timers were a sixth of the CPU a request cost the writer): when it fires, those
        of the group not written yet stop waiting; their rows stay queued."""
        if not self._group:
            asyncio.get_running_loop().call_later(self._reserve_wait_s,
                                                  self._stop_waiting, self._group)
        self._group.append(done)

    def _stop_waiting(self, group: list[asyncio.Future[None]]) -> None:
        if group is self._group:  # its timer is spent: the next comes under a new one
            self._group = []
        slow = [f for f in group if not f.done()]
        for waiter in slow:
            waiter.set_result(None)
        if slow:
            log.warning("usage_reservation_slow", requests=len(slow),
                        waited_s=self._reserve_wait_s)

    def _grew(self, n: int) -> None:
        self.depth += n
        if self.depth > self.max_depth:
            self.max_depth = self.depth

    def _shrank(self, n: int) -> None:
        self.depth -= n
        if self.depth < self._max_pending:
            self._room.set()

    def progress(self, event: UsageEvent) -> None:
        """Running counts of a reserved row still in flight; the latest is written at
        the next tick (never over a settled row: see pipeline/store/usage.py)."""
        if event.id not in self._reserved:
            return
        self._progress[event.id] = event
        if event.output_tokens > 0 and event.id not in self._started:
            # The first token: written at once, by the reservations' task (the prompt
            # of a row without output is not billed if its process dies).
            self._started.add(event.id)
            self._wake.set()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run(), name="usage-writer"),
                       asyncio.create_task(self._run_reservations(),
                                           name="usage-reservations")]

    async def flush(self) -> None:
        """Write everything queued, reservations first (a final event and its
        reservation in one batch collapse into one row write)."""
        await self._writes_done()
        while self._reservations or self._queue:
            items = self._drain(self._reservations, self._batch_size)
            items += self._drain(self._queue, self._batch_size - len(items))
            await self._write_with_retry(items)
        await self._write_progress()

    def _drain(self, queue: deque[_Item], batch_size: int) -> list[_Item]:
        items = [queue.popleft() for _ in range(min(batch_size, len(queue)))]
        if queue is self._reservations:  # taken into a batch: no longer replaceable
            for item in items:
                self._unwritten.pop(item.event.id, None)
        return items

    async def close(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        await self.flush()  # the batches being written finish first: none is cut

    async def _writes_done(self) -> None:
        while self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)

    async def _run(self) -> None:
        """Final events, every `interval_s`."""
        if self._abandoned_after_s is not None:
            await self._settle_abandoned(self._abandoned_after_s)
        while True:
            await asyncio.sleep(self._interval_s)
            await self._write_all(self._queue)
            await self._write_progress()

    async def _run_reservations(self) -> None:
        """Reservations, as soon as they come (group commit: those that come while a
        batch is written go together in the next). One reservation write at a time: a
        transaction per handful of rows cost the database twice the CPU per row of one
        per hundred (bench/usage_events.py), and a request waits for the write under
        way either way."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._group = []  # those queued from now on: under a timer of their own
            writes = await self._write_all(self._reservations)
            await self._write_progress()
            if writes:  # not cancelled with this task: close() waits for them
                await asyncio.wait(writes)

    async def _write_all(self, queue: deque[_Item]) -> list[asyncio.Task[None]]:
        """Batches of the queue, each in a write task of its own (at most
        `concurrent_writes` at a time); a write task is never cancelled mid-write."""
        tasks: list[asyncio.Task[None]] = []
        while queue:
            await self._slots.acquire()
            task = asyncio.create_task(self._write_in_slot(
                self._drain(queue, self._batch_size)))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
            tasks.append(task)
        return tasks

    async def _write_in_slot(self, items: list[_Item]) -> None:
        try:
            await self._write_with_retry(items)
        finally:
            self._slots.release()

    async def _settle_abandoned(self, older_than_s: float) -> None:
        """Rows left in flight by earlier processes (killed mid-call)."""
        try:
            self.abandoned_settled = await self._store.settle_abandoned(older_than_s)
        except Exception:
            log.exception("usage_abandoned_settle_failed")
            return
        if self.abandoned_settled:
            log.warning("usage_abandoned_settled", rows=self.abandoned_settled)

    async def _write_progress(self) -> None:
        """After the final events: rows settled meanwhile are no longer reserved."""
        progress = [e for e in self._progress.values() if e.id in self._reserved]
        self._progress.clear()
        if not progress:
            return
        try:
            await self._store.write(UsageBatch(progress=progress))
        except Exception:  # the next tick writes newer counts; the final event settles
            log.exception("usage_progress_write_failed", rows=len(progress))

    def _batch(self, items: list[_Item]) -> UsageBatch:
        """The latest event per row wins (a final over its reservation); a refusal after
        a reservation deletes the row, or cancels it if the row is not written yet."""
        latest: dict[uuid.UUID, UsageEvent] = {}
        deletes: list[UsageEvent] = []
        for item in items:
            event = item.event
            if event.dispatched:
                latest[event.id] = event
                if event.status_code is not None:  # settled: no longer reserved
                    self._reserved.discard(event.id)
                    self._started.discard(event.id)
                continue
            self._reserved.discard(event.id)
            self._started.discard(event.id)
            if latest.pop(event.id, None) is None:
                deletes.append(event)
        return UsageBatch(upserts=list(latest.values()), deletes=deletes)

    async def _write_with_retry(self, items: list[_Item]) -> None:
        batch = self._batch(items)
        try:
            for attempt in range(3):
                try:
                    await self._store.write(batch)
                    return
                except Exception:
                    log.exception("usage_write_failed", events=len(items),
                                  attempt=attempt + 1)
                    await asyncio.sleep(0.5 * (attempt + 1))
            self.dropped += len(items)
            log.error("usage_events_dropped", events=len(items), reason="write failed")
        finally:
            self._shrank(len(items))
            for item in items:
                if item.done is not None and not item.done.done():
                    item.done.set_result(None)

