"""Running token counts of requests in flight, passed to the usage sink every few seconds.

A process killed mid-call cannot settle its usage row; the next start settles it as
`abandoned` with whatever the row holds. Without progress that is the prompt estimate of
the reservation only, and the output the replica generated before the kill goes unbilled
(measured on real vLLM: tests/reliability/test_usage_reconcile_vllm.py). With it, the row
holds the prompt and the output streamed up to the last write (at most `interval_s` plus
the writer's tick behind). Only rows still in flight are touched (pipeline/store/usage.py).

A request's first token is passed on at once (announced by the router as it comes, passed
on within `FIRST_TOKEN_POLL_S`, written by the writer without waiting for its tick): vLLM
counts a prompt only once its first token is out, and so does the settlement of an
abandoned row — a row that shows no output bills nothing (pipeline/store/usage.py). The
sooner the first token is on the row, the smaller the window where a kill leaves a
prefilled prompt unbilled. Announced, not found by asking every request in flight every
poll: that scan was ~4 % of a router process's CPU with 2,000 requests in flight
(bench/usage_events.py); a first token not announced is passed on at the next round.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from pipeline.router.tasks import cancel_and_wait
from schemas.usage import UsageEvent


@runtime_checkable
class ProgressSink(Protocol):
    """A usage sink that can write an in-flight row's running counts."""

    def progress(self, event: UsageEvent) -> None: ...


Snapshot = Callable[[], UsageEvent]  # the request's in-flight row as it stands now
Counts = Callable[[], tuple[int, int]]  # its (input, output) tokens now: cheap to ask
FIRST_TOKEN_POLL_S = 0.1


class Row(Protocol):
    """A request in flight as the rounds see it; `sent`: the counts its row holds (None:
    not known), updated as they are passed on."""

    sent: tuple[int, int] | None

    def snapshot(self) -> UsageEvent: ...

    def counts(self) -> tuple[int, int]: ...


class _CallbackRow:
    __slots__ = ("_counts", "_snapshot", "sent")

    def __init__(self, snapshot: Snapshot, counts: Counts | None,
                 sent: tuple[int, int] | None) -> None:
        self._snapshot = snapshot
        self._counts = counts or (lambda: _counts(snapshot()))
        self.sent = sent

    def snapshot(self) -> UsageEvent:
        return self._snapshot()

    def counts(self) -> tuple[int, int]:
        return self._counts()


class InFlightProgress:
    """Requests in flight (by usage row id) and a task that passes their counts on, when
    they changed, every `interval_s`. A no-op for a sink without `progress`."""

    def __init__(self, sink: object, interval_s: float = 1.0) -> None:
        self._sink = sink if isinstance(sink, ProgressSink) else None
        self._interval_s = interval_s
        # One object per row, its counts last passed on in it (one dict operation per
        # track and untrack, one allocation per request). Counts are asked every round,
        # the snapshot only built when they changed (building an event per row per poll
        # cost more CPU than writing the rows: bench/usage_events.py).
        self._tracked: dict[uuid.UUID, Row] = {}
        self._first: set[uuid.UUID] = set()  # first token announced, not passed on yet
        self._task: asyncio.Task[None] | None = None

    def track(self, row_id: uuid.UUID, snapshot: Snapshot,
              counts: Counts | None = None,
              written: tuple[int, int] | None = None) -> None:
        """`written`: the counts the row already holds (its reservation's): a round
        passes the row on only once they change (most requests end before they do)."""
        self.track_row(row_id, _CallbackRow(snapshot, counts, written))

    def track_row(self, row_id: uuid.UUID, row: Row) -> None:
        if self._sink is None:
            return
        self._tracked[row_id] = row
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="usage-progress")

    def untrack(self, row_id: uuid.UUID) -> None:
        self._tracked.pop(row_id, None)
        if self._first:
            self._first.discard(row_id)

    def first_token(self, row_id: uuid.UUID) -> None:
        """The row's first output token came: passed on at the next poll, not round."""
        if row_id in self._tracked:
            self._first.add(row_id)

    def pass_on(self) -> int:
        """One round: the rows whose counts changed since the last; how many."""
        if self._sink is None:
            return 0
        passed = 0
        for row in list(self._tracked.values()):
            if row.sent != row.counts():
                event = row.snapshot()
                self._sink.progress(event)
                row.sent = _counts(event)
                passed += 1
        return passed

    def pass_on_first_tokens(self) -> int:
        """The rows whose first token was announced since the last poll and whose counts
        show it (the announcement may come before the chunk is counted: such a row
        waits for the next poll); how many."""
        if self._sink is None or not self._first:
            return 0
        passed = 0
        for row_id in list(self._first):
            row = self._tracked.get(row_id)
            if row is not None and (row.sent or (0, 0))[1] == 0:
                if row.counts()[1] == 0:
                    continue
                event = row.snapshot()
                self._sink.progress(event)
                row.sent = _counts(event)
                passed += 1
            self._first.discard(row_id)
        return passed

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_round = loop.time() + self._interval_s
        while self._tracked:
            await asyncio.sleep(min(FIRST_TOKEN_POLL_S, self._interval_s))
            if loop.time() >= next_round:
                self.pass_on()
                next_round = loop.time() + self._interval_s
            else:
                self.pass_on_first_tokens()

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None


def _counts(event: UsageEvent) -> tuple[int, int]:
    return event.input_tokens, event.output_tokens
