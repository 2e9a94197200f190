"""Replay archive files: filter, skip alerts that already have verdicts, publish in
acknowledged chunks at a bounded rate, checkpoint each file after every chunk.

Exactly once per alert across a clean stop (SIGINT/SIGTERM: the chunk in flight is
acknowledged and checkpointed before exit); after a hard kill at most the one
unacknowledged chunk is sent again, and the verdicts table (unique on tenant + alert id)
keeps that idempotent end to end. A line that cannot be sent (over
`ingest.max_alert_bytes`, or not a JSON object within bounds) goes to alerts.dlq with its
line number and reason, acknowledged with its chunk, and the replay goes on.
"""

from __future__ import annotations

import asyncio
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


class Backfill:
    def __init__(self, sink: AlertSinkWithDLQ, checkpoints: CheckpointStore, *, tenant_id: str,
                 alert_filter: AlertFilter, bucket: TokenBucket, chunk_size: int,
                 existing: ExistingVerdicts = _no_existing,
                 stop: asyncio.Event | None = None) -> None:
        self.sink = sink
        self.checkpoints = checkpoints
        self.tenant_id = tenant_id
        self.alert_filter = alert_filter
        self.bucket = bucket
        self.chunk_size = chunk_size
        self.existing = existing
        self.stop = stop or asyncio.Event()

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
        chunk = _Chunk()
        position = (checkpoint.line, checkpoint.offset)
        last_raw = 0
        for line in reader:
            if progress is not None:
                raw = reader.raw_position
                progress.advance(raw - last_raw, 1)
                last_raw = raw
            parsed = parse_line(line.data, max_bytes=self.sink.max_alert_bytes)
            position = (line.number, line.end_offset)
            if parsed.refusal is not None:
                chunk.refused.append((line.number, line.data, parsed.refusal))
            elif parsed.document is None or not self.alert_filter.matches(parsed.document):
                report.filtered_out += 1
                continue
            else:
                chunk.values.append(line.data)
                chunk.ids.append(parsed.alert_id)
            if len(chunk) >= self.chunk_size:
                await self._flush(identity, chunk, position, report)
                chunk = _Chunk()
                if self.stop.is_set():
                    return report
        await self._flush(identity, chunk, position, report, done=True,
                          problem=reader.problem)
        report.problem = reader.problem
        if progress is not None:
            progress.advance(reader.size - last_raw, 0)
        return report

    async def _flush(self, identity: FileIdentity, chunk: _Chunk, position: tuple[int, int],
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
        if values:
            await self.bucket.acquire(len(values))
            await self.sink.publish(self.tenant_id, values)  # returns once acknowledged
        report.published += len(values)
        self.checkpoints.save(identity, Checkpoint(
            line=position[0], offset=position[1], done=done, published=report.published,
            problem=problem))
