"""Running counts of requests in flight (router/progress.py) and how the usage writer
writes them: latest per row, only while the row is reserved, after final events."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from functools import partial

from pipeline.router.metering import Call, Meter, PendingPrefill, UsageRecorder
from pipeline.router.progress import InFlightProgress, _CallbackRow
from pipeline.router.replicas import Replica
from pipeline.router.types import ChatRequest
from pipeline.router.usage import BatchingUsageWriter
from schemas.usage import IN_FLIGHT, UsageEvent
from tests.unit.test_router_units import ListStore


def in_flight(row_id: uuid.UUID, output_tokens: int) -> UsageEvent:
    return UsageEvent(id=row_id, tenant_id="t", model_name="m", pool="default",
                      replica="r", request_id=row_id.hex, input_tokens=40,
                      output_tokens=output_tokens, status_code=None, error_kind=IN_FLIGHT)


class ProgressList:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> None:
        raise AssertionError("progress never records")

    def progress(self, event: UsageEvent) -> None:
        self.events.append(event)


def test_counts_are_passed_on_only_when_they_changed() -> None:
    sink = ProgressList()
    progress = InFlightProgress(sink)
    row = uuid.uuid4()
    streamed = [0]
    # no loop: rounds by hand; counts asked of a cheap function, as the recorder passes
    progress._tracked[row] = _CallbackRow(lambda: in_flight(row, streamed[0]),
                                          lambda: (40, streamed[0]), None)
    assert progress.pass_on() == 1
    assert progress.pass_on() == 0  # unchanged
    streamed[0] = 17
    assert progress.pass_on() == 1
    progress.untrack(row)
    assert progress.pass_on() == 0
    assert [e.output_tokens for e in sink.events] == [0, 17]


async def test_a_sink_without_progress_tracks_nothing() -> None:
    progress = InFlightProgress(object())
    progress.track(uuid.uuid4(), lambda: in_flight(uuid.uuid4(), 1))
    assert progress.pass_on() == 0 and progress._task is None


async def test_the_loop_passes_counts_on_while_requests_are_tracked() -> None:
    sink = ProgressList()
    progress = InFlightProgress(sink, interval_s=0.02)
    row = uuid.uuid4()
    streamed = [0]
    progress.track(row, lambda: in_flight(row, streamed[0]))
    for n in range(1, 4):
        streamed[0] = n
        await asyncio.sleep(0.05)
    progress.untrack(row)
    await asyncio.sleep(0.05)
    assert progress._task is not None and progress._task.done()  # stops when idle
    await progress.close()
    assert [e.output_tokens for e in sink.events] == [1, 2, 3]


async def test_the_writer_writes_the_latest_counts_of_reserved_rows_only() -> None:
    store = ListStore()
    writer = BatchingUsageWriter(store, interval_s=0.05)
    writer.start()
    reserved, settled, unknown = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await writer.reserve(in_flight(reserved, 0))
    await writer.reserve(in_flight(settled, 0))
    for n in (5, 9):
        writer.progress(in_flight(reserved, n))
        writer.progress(in_flight(settled, n))
    writer.progress(in_flight(unknown, 3))  # never reserved here: ignored
    writer.record(replace(in_flight(settled, 12), status_code=200, error_kind=None))
    await asyncio.sleep(0.2)
    await writer.close()
    written = {(e.id, e.output_tokens) for batch in store.batches for e in batch.progress}
    # The latest counts per row (written at once: first tokens), never the unknown row's.
    assert written == {(reserved, 9), (settled, 9)}
    # The final event is written after its row's progress (the SQL keeps a settled row).
    final = [n for n, batch in enumerate(store.batches)
             if any(e.id == settled and e.status_code == 200 for e in batch.upserts)]
    last_progress = max(n for n, batch in enumerate(store.batches)
                        if any(e.id == settled for e in batch.progress))
    assert final and final[0] > last_progress
    writer.progress(in_flight(settled, 20))  # after its final event: ignored
    assert settled not in writer._progress


def test_a_first_token_is_passed_on_without_waiting_for_the_round() -> None:
    sink = ProgressList()
    progress = InFlightProgress(sink, interval_s=60)
    rows = [uuid.uuid4(), uuid.uuid4()]
    streamed = {rows[0]: 0, rows[1]: 0}
    for row in rows:
        progress._tracked[row] = _CallbackRow(lambda row=row: in_flight(row, streamed[row]),  # type: ignore[misc]
                                              lambda row=row: (40, streamed[row]), (40, 0))  # type: ignore[misc]
    assert progress.pass_on_first_tokens() == 0  # nothing announced: nothing to say
    progress.first_token(rows[0])  # announced before its chunk is counted (dispatch.py)
    assert progress.pass_on_first_tokens() == 0  # no output yet: waits for the next poll
    streamed[rows[0]] = 1
    streamed[rows[1]] = 3  # not announced: left to the round
    assert progress.pass_on_first_tokens() == 1
    streamed[rows[0]] = 6  # later tokens wait for the round
    progress.first_token(rows[0])
    assert progress.pass_on_first_tokens() == 0
    assert [(e.id, e.output_tokens) for e in sink.events] == [(rows[0], 1)]
    assert progress.pass_on() == 2  # the round: both rows' latest counts
    assert [(e.id, e.output_tokens) for e in sink.events][1:] == [(rows[0], 6), (rows[1], 3)]


def test_an_announcement_for_a_row_no_longer_tracked_is_ignored() -> None:
    progress = InFlightProgress(ProgressList(), interval_s=60)
    row = uuid.uuid4()
    progress._tracked[row] = _CallbackRow(lambda: in_flight(row, 1), lambda: (40, 1), (40, 0))
    progress.first_token(row)
    progress.untrack(row)
    progress.first_token(uuid.uuid4())  # never tracked
    assert progress.pass_on_first_tokens() == 0 and not progress._first


async def test_the_writer_writes_a_first_token_at_once() -> None:
    store = ListStore()
    writer = BatchingUsageWriter(store, interval_s=60)  # its tick would wait a minute
    writer.start()
    row = uuid.uuid4()
    await writer.reserve(in_flight(row, 0))
    writer.progress(in_flight(row, 0))  # no token yet: waits for the tick
    await asyncio.sleep(0.05)
    assert not [e for batch in store.batches for e in batch.progress]
    writer.progress(in_flight(row, 1))
    await asyncio.sleep(0.05)
    written = [e for batch in store.batches for e in batch.progress]
    assert [(e.id, e.output_tokens) for e in written] == [(row, 1)]
    await writer.close()


async def test_the_recorder_hears_of_a_first_token_from_the_dispatch() -> None:
    """As the router wires it (router.py `_attempt`): the attempt's first token announces
    the row, and the next poll passes it on — no scan of every request in flight."""
    sink = ProgressList()
    recorder = UsageRecorder("m", sink, progress_interval_s=60)
    call = Call(request=ChatRequest(tenant_id="t", messages=[], max_tokens=8))
    call.estimated = 40
    meter = Meter()
    await recorder.reserve(call, "http://r0/v1", meter)
    progress = meter.attempt("http://r0/v1")
    pending = PendingPrefill(Replica("http://r0/v1", "default"), 40, None,
                             partial(recorder.first_token, meter))
    pending.done()  # the first token, before its chunk is counted
    progress.chunks = 1
    assert recorder._progress.pass_on_first_tokens() == 1
    assert [(e.id, e.output_tokens) for e in sink.events] == [(meter.row_id, 1)]
    recorder.settled(meter)
    await recorder.close()
