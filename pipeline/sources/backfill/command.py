"""The `secanalyst backfill` job: estimate, confirm, replay with a progress bar."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from pipeline.config import Settings
from pipeline.shutdown import forget_signals, stop_on_signals
from pipeline.sources.backfill.checkpoint import CheckpointStore
from pipeline.sources.backfill.estimate import Estimate, count_alerts, measured_tokens, price
from pipeline.sources.backfill.filters import AlertFilter
from pipeline.sources.backfill.ratelimit import TokenBucket
from pipeline.sources.backfill.reader import ArchiveReader
from pipeline.sources.backfill.runner import Backfill, BackfillReport

if TYPE_CHECKING:
    from psycopg import AsyncConnection

    from pipeline.kafka.producer import AlertSinkWithDLQ, KafkaAlertSink


def _lines(files: list[Path], problems: list[str]) -> Iterator[bytes]:
    for path in files:
        reader = ArchiveReader(path)
        for line in reader:
            yield line.data
        if reader.problem:
            problems.append(f"{path.name}: {reader.problem}")


def estimate_files(settings: Settings, files: list[Path], alert_filter: AlertFilter,
                   tenant_id: str, *, use_database: bool = True) -> Estimate:
    from pipeline.sources.backfill.estimate import default_tokens

    estimate = Estimate()
    count_alerts(_lines(files, estimate.problems), alert_filter, estimate, tenant_id,
                 max_alert_bytes=settings.ingest.max_alert_bytes)
    per_verdict = measured_tokens(settings) if use_database else default_tokens(settings)
    price(settings, estimate, per_verdict)
    return estimate


def print_estimate(console: Console, estimate: Estimate) -> None:
    table = Table("", "estimate", title="backfill estimate (nothing sent yet)")
    table.add_row("lines read", f"{estimate.lines:,}")
    table.add_row("alerts to replay", f"{estimate.alerts:,}")
    table.add_row("filtered out", f"{estimate.filtered_out:,}")
    table.add_row("malformed (→ DLQ)", f"{estimate.malformed:,}")
    table.add_row("distinct fingerprints (LLM calls, at most)",
                  f"{estimate.distinct_fingerprints:,}")
    table.add_row("expected input tokens", f"{estimate.input_tokens:,}")
    table.add_row("expected output tokens", f"{estimate.output_tokens:,}")
    table.add_row("tokens per verdict from", estimate.tokens_source)
    table.add_row("estimated cost", f"{estimate.cost:.4f}")
    for problem in estimate.problems:
        table.add_row("[red]damaged file[/red]", problem)
    console.print(table)


class _RichProgress:
    def __init__(self, progress: Progress, task: TaskID) -> None:
        self.progress = progress
        self.task = task
        self.alerts = 0
        self.started = asyncio.get_running_loop().time()

    def advance(self, raw_bytes: int, alerts: int) -> None:
        self.alerts += alerts
        elapsed = max(asyncio.get_running_loop().time() - self.started, 1e-6)
        self.progress.update(self.task, advance=raw_bytes, alerts=self.alerts,
                             rate=self.alerts / elapsed)


def backfill_sink(settings: Settings) -> AbstractAsyncContextManager[KafkaAlertSink]:
    """The backfill's producer: the one producer path (acks=all), its batches sized by
    `ingest.backfill_batch_bytes` and compressed by `ingest.backfill_compression`; each
    chunk goes to one partition (the next chunk to the next), as few record batches as
    fit: the S3-backed broker writes an object per batch, and pays per object."""
    from pipeline.kafka.producer import open_alert_sink

    codec = settings.ingest.backfill_compression
    return open_alert_sink(settings, settings.kafka.topics.backfill, priority="batch",
                           spread=False, max_batch_size=settings.ingest.backfill_batch_bytes,
                           compression_type=None if codec == "none" else codec)


async def run_backfill(settings: Settings, files: list[Path], *, tenant_id: str,
                       alert_filter: AlertFilter, rate: float, chunk: int, job: str,
                       skip_existing: bool, console: Console) -> BackfillReport:
    from psycopg import AsyncConnection

    stop = stop_on_signals()
    conn: AsyncConnection | None = None
    try:
        if skip_existing:
            conn = await AsyncConnection.connect(settings.database_url, autocommit=True)
        async with backfill_sink(settings) as sink:
            return await _replay(sink, settings, files, conn, stop, tenant_id=tenant_id,
                                 alert_filter=alert_filter, rate=rate, chunk=chunk,
                                 job=job, console=console)
    finally:
        forget_signals()
        if conn is not None:
            await conn.close()


async def _replay(sink: AlertSinkWithDLQ, settings: Settings, files: list[Path],
                  conn: AsyncConnection | None, stop: asyncio.Event, *, tenant_id: str,
                  alert_filter: AlertFilter, rate: float, chunk: int, job: str,
                  console: Console) -> BackfillReport:
    from pipeline.sources.backfill.existing import ExistingVerdictLookup

    backfill = Backfill(
        sink, CheckpointStore(settings.state_dir / "backfill", job), tenant_id=tenant_id,
        alert_filter=alert_filter, bucket=TokenBucket(rate, burst=max(rate, chunk)),
        chunk_size=chunk, stop=stop, max_in_flight=settings.ingest.backfill_in_flight,
        existing=ExistingVerdictLookup(conn) if conn is not None else None)
    columns = (TextColumn("[bold]backfill"), BarColumn(),
               TextColumn("{task.fields[alerts]:,} alerts"),
               TextColumn("{task.fields[rate]:,.0f} alerts/s"), TimeElapsedColumn(),
               TextColumn("ETA"), TimeRemainingColumn())
    total = sum(p.stat().st_size for p in files)
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("backfill", total=total, alerts=0, rate=0.0)
        return await backfill.run(files, _RichProgress(progress, task))


def print_report(console: Console, report: BackfillReport) -> None:
    table = Table("file", "published", "had verdicts", "filtered", "refused (→ DLQ)",
                  "note", title="backfill" + (" (interrupted: run again to resume)"
                                              if report.interrupted else ""))
    for f in report.files:
        note = "already done" if f.already_done else ""
        if f.problem:
            note = f"[red]{f.problem}[/red]"
        table.add_row(str(f.path), f"{f.published:,}", f"{f.skipped_existing:,}",
                      f"{f.filtered_out:,}", f"{f.dead_lettered:,}", note)
    console.print(table)


def write_gzip_lines(path: Path, lines: list[bytes]) -> None:
    """Helper for benches and tests: a gzip archive of JSON lines."""
    with gzip.open(path, "wb") as out:
        for line in lines:
            out.write(line.rstrip(b"\n") + b"\n")
