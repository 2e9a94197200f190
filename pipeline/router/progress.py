"""Running token counts of requests in flight, passed to the usage sink every few seconds.

A process killed mid-call cannot settle its usage row; the next start settles it as
`abandoned` with whatever the row holds. Without progress that is the prompt estimate of
the reservation only, and the output the replica generated before the kill goes unbilled
(measured on real vLLM: tests/reliability/test_usage_reconcile_vllm.py). With it, the row
holds the prompt and the output streamed up to the last write (at most `interval_s` plus
the writer's tick behind). Only rows still in flight are touched (pipeline/store/usage.py).

A request's first token is passed on at once (polled every `FIRST_TOKEN_POLL_S`, written
by the writer without waiting for its tick): vLLM counts a prompt only once its first
token is out, and so does the settlement of an abandoned row — a row that shows no output
bills nothing (pipeline/store/usage.py). The sooner the first token is on the row, the
smaller the window where a kill leaves a prefilled prompt unbilled.
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


class InFlightProgress:
    """Requests in flight (by usage row id) and a task that passes their counts on, when
    they changed, every `interval_s`. A no-op for a sink without `progress`."""

    def __init__(self, sink: object, interval_s: float = 1.0) -> None:
        self._sink = sink if isinstance(sink, ProgressSink) else None
        self._interval_s = interval_s
        # A row's snapshot, and its counts: asked every round, the snapshot only built
        # when they changed (building an event per row per poll cost more CPU than
        # writing the rows: bench/usage_events.py).
        self._tracked: dict[uuid.UUID, tuple[Snapshot, Counts]] = {}
        self._sent: dict[uuid.UUID, tuple[int, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def track(self, row_id: uuid.UUID, snapshot: Snapshot,
              counts: Counts | None = None,
              written: tuple[int, int] | None = None) -> None:
        """`written`: the counts the row already holds (its reservation's): a round
        passes the row on only once they change (most requests end before they do)."""
        if self._sink is None:
            return
        self._tracked[row_id] = (snapshot, counts or (lambda: _counts(snapshot())))
        if written is not None:
            self._sent[row_id] = written
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="usage-progress")

    def untrack(self, row_id: uuid.UUID) -> None:
        self._tracked.pop(row_id, None)
        self._sent.pop(row_id, None)

    def pass_on(self) -> int:
        """One round: the rows whose counts changed since the last; how many."""
        if self._sink is None:
            return 0
        passed = 0
        for row_id, (snapshot, counts) in list(self._tracked.items()):
            if self._sent.get(row_id) != counts():
                event = snapshot()
                self._sink.progress(event)
                self._sent[row_id] = _counts(event)
                passed += 1
        return passed

    def pass_on_first_tokens(self) -> int:
        """The rows whose first output token came since the last round; how many."""
        if self._sink is None:
            return 0
        passed = 0
        for row_id, (snapshot, counts) in list(self._tracked.items()):
            if self._sent.get(row_id, (0, 0))[1] > 0 or counts()[1] == 0:
                continue
            event = snapshot()
            self._sink.progress(event)
            self._sent[row_id] = _counts(event)
            passed += 1
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
