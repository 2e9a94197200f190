"""Replay archive files: filter, skip alerts that already have verdicts, publish in
chunks at a bounded rate, checkpoint each file once a chunk is acknowledged.

Up to `max_in_flight` chunks wait for their acknowledgement while the next ones are read
(the broker's round trip no longer stalls the reader); a checkpoint is saved only when its
chunk and every chunk before it are acknowledged, in order. Exactly once per alert across a
clean stop (SIGINT/SIGTERM: every chunk in flight is acknowledged and checkpointed before
exit); after a hard kill at most the unacknowledged chunks in flight are sent again, and
the verdicts table (unique on tenant + alert id) keeps that idempotent end to end. A line
that cannot be sent (over `ingest.max_alert_bytes`, or not a JSON object within bounds)
goes to alerts.dlq with its line number and reason, acknowledged before its chunk's
checkpoint, and the replay goes on.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pipeline.kafka.alert_guard import AlertRefused
from pipeline.kafka.producer import AlertSinkWithDLQ, dead_letter_line
from pipeline.sources.backfill.checkpoint import Checkpoint, CheckpointStore
from pipeline.sources.backfill.filters import AlertFilter, parse_line
from pipeline.sources.backfill.ratelimit import TokenBucket
from pipeline.sources.backfill.reader import ArchiveReader, FileIdentity

ExistingVerdicts = Callable[[str, Sequence[str]], Awaitable[set[str]]]


class Progress(Protocol):
    def advance(self, raw_bytes: int, alerts: int) -> None: ...


@dataclass
class FileReport:
    path: Path
    published: int = 0
    skipped_existing: int = 0
    filtered_out: int = 0
    dead_lettered: int = 0  # refused lines sent to alerts.dlq by the replay
    already_done: bool = False
    problem: str | None = None


@dataclass
class BackfillReport:
    files: list[FileReport] = field(default_factory=list)
    interrupted: bool = False

    def total(self, name: str) -> int:
        return sum(int(getattr(f, name)) for f in self.files)


@dataclass
class _Chunk:
    values: list[bytes] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    refused: list[tuple[int, bytes, AlertRefused]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.values) + len(self.refused)


async def _no_existing(_: str, __: Sequence[str]) -> set[str]:
    return set()


# The event loop gets a turn this often while lines are parsed, so acknowledgements of the
# chunks in flight are handled (and the next produce request goes out) meanwhile.
_YIELD_EVERY_LINES = 128


class _InFlight:
    """Chunks sent and not yet checkpointed, oldest first. A committer task awaits their
    acknowledgements in order and saves the checkpoint of the newest acknowledged prefix
    (one fsync, off the event loop, for every chunk acknowledged meanwhile); the reader
    waits only when more than `limit` chunks are outstanding."""

    def __init__(self, store: CheckpointStore, identity: FileIdentity, report: FileReport,
                 limit: int) -> None:
        self.store = store
        self.identity = identity
        self.report = report
        self.limit = max(limit, 1)
        self.sent = report.published  # published once everything in flight is acknowledged
        self._chunks: deque[tuple[asyncio.Task[None] | None, Checkpoint]] = deque()
        self._changed = asyncio.Condition()
        self._failure: BaseException | None = None
        self._committer = asyncio.create_task(self._commit_in_order())

    async def push(self, acknowledged: asyncio.Task[None] | None,
                   checkpoint: Checkpoint) -> None:
        async with self._changed:
            self._chunks.append((acknowledged, checkpoint))
            self.sent = checkpoint.published
            self._changed.notify_all()
            await self._changed.wait_for(
                lambda: self._failure is not None or len(self._chunks) <= self.limit)
        self._raise_failure()

    async def settle_all(self) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._failure is not None or not self._chunks)
        self._raise_failure()
        self._committer.cancel()

    async def abandon(self) -> None:
        """After a failure: nothing more is checkpointed; the sends are cancelled."""
        tasks = [self._committer, *(task for task, _ in self._chunks if task is not None)]
        self._chunks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure

    def _acknowledged_prefix(self) -> int:
        count = 0
        for task, _ in self._chunks:
            if task is not None and (not task.done() or task.cancelled()
                                     or task.exception() is not None):
                break
            count += 1
        return count

    async def _commit_in_order(self) -> None:
        try:
            while True:
                async with self._changed:
                    await self._changed.wait_for(lambda: bool(self._chunks))
                oldest = self._chunks[0][0]
                if oldest is not None:
                    await oldest  # raises if the broker did not take the chunk
                count = self._acknowledged_prefix()
                checkpoint = self._chunks[count - 1][1]
                await asyncio.to_thread(self.store.save, self.identity, checkpoint)
                self.report.published = checkpoint.published
                async with self._changed:
                    for _ in range(count):
                        self._chunks.popleft()
                    self._changed.notify_all()
        except Exception as exc:  # the reader raises it at its next push or settle
            async with self._changed:
                self._failure = exc
                self._changed.notify_all()


class Backfill:
    def __init__(self, sink: AlertSinkWithDLQ, checkpoints: CheckpointStore, *, tenant_id: str,
                 alert_filter: AlertFilter, bucket: TokenBucket, chunk_size: int,
                 existing: ExistingVerdicts | None = None,
                 stop: asyncio.Event | None = None, max_in_flight: int = 4) -> None:
        self.sink = sink
        self.checkpoints = checkpoints
        self.tenant_id = tenant_id
        self.alert_filter = alert_filter
        self.bucket = bucket
        self.chunk_size = chunk_size
        self.existing = existing or _no_existing
        self.stop = stop or asyncio.Event()
        self.max_in_flight = max_in_flight

    async def run(self, files: Sequence[Path], progress: Progress | None = None,
                  ) -> BackfillReport:
        report = BackfillReport()
        for path in files:
            file_report = await self.run_file(path, progress)
            report.files.append(file_report)
            if self.stop.is_set():
                report.interrupted = True
                break
        return report

    async def run_file(self, path: Path, progress: Progress | None = None) -> FileReport:
        identity = FileIdentity.of(path)
        checkpoint = self.checkpoints.load(identity)
        report = FileReport(path, published=checkpoint.published, problem=checkpoint.problem)
        reader = ArchiveReader(path, start_line=checkpoint.line, start_offset=checkpoint.offset)
        if checkpoint.done:
            report.already_done = True
            if progress is not None:
                progress.advance(reader.size, 0)
            return report
        in_flight = _InFlight(self.checkpoints, identity, report, self.max_in_flight)
        try:
            finished = await self._send_file(reader, in_flight, report, progress,
                                             (checkpoint.line, checkpoint.offset))
            await in_flight.settle_all()
        except BaseException:
            await in_flight.abandon()
            raise
        if finished:
            report.problem = reader.problem
        return report

    async def _send_file(self, reader: ArchiveReader, in_flight: _InFlight,
                         report: FileReport, progress: Progress | None,
                         position: tuple[int, int]) -> bool:
        """Send every chunk of the file; False when stopped before its end."""
        chunk = _Chunk()
        tick = _Tick(reader, progress)
        max_bytes = self.sink.max_alert_bytes
        # Per line, at ~20k lines/s: no filter call when none is set, no attribute lookups.
        matches = self.alert_filter.matches if self.alert_filter.active else None
        for line in reader:
            tick.lines += 1
            if tick.lines % _YIELD_EVERY_LINES == 0:
                await asyncio.sleep(0)
            document, alert_id, refusal = parse_line(line.data, max_bytes=max_bytes)
            position = (line.number, line.end_offset)
            if refusal is not None:
                chunk.refused.append((line.number, line.data, refusal))
            elif document is None or (matches is not None and not matches(document)):
                report.filtered_out += 1
                continue
            else:
                chunk.values.append(line.data)
                chunk.ids.append(alert_id)
            if len(chunk) >= self.chunk_size:
                await self._send(in_flight, chunk, position, report)
                chunk = _Chunk()
                tick.advance()
                if self.stop.is_set():
                    return False
        await self._send(in_flight, chunk, position, report, done=True,
                         problem=reader.problem)
        tick.advance(finished=True)
        return True

    async def _send(self, in_flight: _InFlight, chunk: _Chunk, position: tuple[int, int],
                    report: FileReport, *, done: bool = False,
                    problem: str | None = None) -> None:
        known = [i for i in chunk.ids if i is not None]
        existing = await self.existing(self.tenant_id, known) if known else set()
        values = [v for v, i in zip(chunk.values, chunk.ids, strict=True)
                  if i is None or i not in existing]
        report.skipped_existing += len(chunk.values) - len(values)
        for number, data, refusal in chunk.refused:
            await dead_letter_line(self.sink, "backfill", data, refusal,
                                   tenant_id=self.tenant_id, line=number)
        report.dead_lettered += len(chunk.refused)
        acknowledged = None
        if values:
            await self.bucket.acquire(len(values))
            # publish returns once acknowledged: a task, so the next chunks are read meanwhile
            acknowledged = asyncio.create_task(self.sink.publish(self.tenant_id, values))
            await asyncio.sleep(0)  # the task's first step hands its batches to the producer
        await in_flight.push(acknowledged, Checkpoint(
            line=position[0], offset=position[1], done=done,
            published=in_flight.sent + len(values), problem=problem))


class _Tick:
    """Progress reported per chunk (not per line: a progress bar update costs more than
    parsing a line)."""

    def __init__(self, reader: ArchiveReader, progress: Progress | None) -> None:
        self.reader = reader
        self.progress = progress
        self.lines = 0
        self._reported_lines = 0
        self._reported_raw = 0

    def advance(self, *, finished: bool = False) -> None:
        if self.progress is None:
            return
        raw = self.reader.size if finished else self.reader.raw_position
        self.progress.advance(raw - self._reported_raw, self.lines - self._reported_lines)
        self._reported_raw, self._reported_lines = raw, self.lines
