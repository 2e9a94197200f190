"""Commands of the ingest side: `ingest-server` (POST /ingest/wazuh), `backfill` (replay
Wazuh archives into alerts.backfill), `tail` (follow alerts.json into alerts.raw) and
`wazuh-writeback` (starts the consumer of consumers/writeback.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.cli.preflight import Need, command_settings
from pipeline.config import Settings

console = Console()


def ingest_server(host: Annotated[str | None, typer.Option(help="Listen address.")] = None,
                  port: Annotated[int | None, typer.Option(help="Listen port.")] = None,
                  ) -> None:
    """Serve POST /ingest/wazuh (Wazuh alerts over HTTP, per-tenant API keys) → alerts.raw."""
    import uvicorn

    from pipeline.web.ingest import create_ingest_app

    settings = command_settings(Need.KAFKA, Need.DATABASE)
    uvicorn.run(create_ingest_app(settings), host=host or settings.ingest.host,
                port=port or settings.ingest.port, access_log=False, log_config=None)


def ingest_file(settings: Settings, file: str, tenant_id: str) -> None:
    """`secanalyst ingest FILE` (registered in pipeline/cli/app/app.py): screen and publish every
    line; refused lines go to the DLQ with a warning naming the line, and the summary
    counts them. Exit 1 only when nothing could be sent."""
    import asyncio
    import sys
    from contextlib import nullcontext

    from aiokafka.errors import KafkaError

    from pipeline.sources.ingest_file import IngestReport, ingest_lines, numbered_lines

    report = IngestReport()
    path = Path(file)
    if file != "-" and not path.is_file():
        raise typer.BadParameter(f"{file} is not a file", param_hint="FILE")
    try:
        with (nullcontext(sys.stdin.buffer) if file == "-" else path.open("rb")) as stream:
            asyncio.run(ingest_lines(settings, numbered_lines(stream), tenant_id=tenant_id,
                                     report=report))
    except (KafkaError, TimeoutError) as exc:
        console.print(f"[red]stopped after line {report.last_line}: the broker did not "
                      f"acknowledge ({type(exc).__name__}: {exc})[/red]; {report.sent} "
                      "alerts were published; run again (alerts are de-duplicated by id)")
        raise typer.Exit(1) from exc
    letters = (f"; {report.dead_lettered} lines refused → {settings.kafka.topics.dlq} "
               "(see the warnings)" if report.dead_lettered else "")
    console.print(f"published {report.sent} alerts to {settings.kafka.topics.raw} "
                  f"(tenant {tenant_id}){letters}")
    if report.sent == 0 and report.dead_lettered:
        raise typer.Exit(1)


def _when(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"{value!r} is not an ISO date or time",
                                 param_hint=option) from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


# Over 60 lines only because typer reads the options from the signature (26 lines of
# option declarations); the body is under 50.
def backfill(
        paths: Annotated[list[Path], typer.Argument(
            help="alerts.json files, .gz archives, or folders of daily archives.")],
        tenant: Annotated[str | None, typer.Option(
            help="Tenant the alerts belong to (default: tenants.default_tenant).")] = None,
        since: Annotated[str | None, typer.Option(help="Only alerts at or after (ISO).")]
        = None,
        until: Annotated[str | None, typer.Option(help="Only alerts before (ISO).")] = None,
        min_level: Annotated[int | None, typer.Option(help="Minimum rule level.")] = None,
        group: Annotated[list[str] | None, typer.Option(
            help="Only alerts in this rule group (repeatable: any of them).")] = None,
        rate: Annotated[float | None, typer.Option(
            help="Alerts per second (0: unlimited; default ingest.backfill_rate_per_s).")]
        = None,
        estimate: Annotated[bool, typer.Option(
            help="Estimate alerts, fingerprints, tokens and cost first; ask above "
                 "ingest.confirm_above_cost.")] = False,
        estimate_only: Annotated[bool, typer.Option(help="Estimate, then stop.")] = False,
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
        skip_existing: Annotated[bool, typer.Option(
            help="Do not publish alerts that already have a verdict (needs the database).")]
        = True,
        job: Annotated[str, typer.Option(help="Checkpoint namespace of this job.")]
        = "default",
        restart: Annotated[bool, typer.Option(help="Forget the job's checkpoints.")] = False,
        ) -> None:
    """Replay Wazuh archives into alerts.backfill (priority batch): filtered, rate-limited,
    resumable (a checkpoint per file), idempotent (alerts with verdicts are skipped)."""
    import asyncio

    from pipeline.sources.backfill.checkpoint import CheckpointStore
    from pipeline.sources.backfill.command import (
        estimate_files,
        print_estimate,
        print_report,
        run_backfill,
    )
    from pipeline.sources.backfill.filters import AlertFilter
    from pipeline.sources.backfill.reader import ArchiveNotFound, archive_files

    settings = command_settings(Need.KAFKA, *(Need.DATABASE,) * skip_existing)
    try:
        files = archive_files(paths)
    except ArchiveNotFound as exc:
        raise typer.BadParameter(str(exc), param_hint="PATHS") from exc
    if not files:
        raise typer.BadParameter("no archive files found", param_hint="PATHS")
    tenant_id = tenant or settings.tenants.default_tenant
    alert_filter = AlertFilter(since=_when(since, "--since"), until=_when(until, "--until"),
                               min_level=min_level, groups=frozenset(group or ()))
    if restart:
        removed = CheckpointStore(settings.state_dir / "backfill", job).reset()
        console.print(f"forgot {removed} checkpoints of job {job!r}")
    if estimate or estimate_only:
        found = estimate_files(settings, files, alert_filter, tenant_id)
        print_estimate(console, found)
        if estimate_only:
            return
        if found.cost > settings.ingest.confirm_above_cost and not yes \
                and not typer.confirm(f"Estimated cost {found.cost:.2f} is above "
                                      f"{settings.ingest.confirm_above_cost:.2f}. Proceed?"):
            raise typer.Exit(1)
    report = asyncio.run(run_backfill(
        settings, files, tenant_id=tenant_id, alert_filter=alert_filter,
        rate=settings.ingest.backfill_rate_per_s if rate is None else rate,
        chunk=settings.ingest.backfill_chunk, job=job, skip_existing=skip_existing,
        console=console))
    print_report(console, report)
    if report.interrupted:
        raise typer.Exit(130)
    if any(f.problem for f in report.files):
        raise typer.Exit(1)
    if report.total("dead_lettered") and not report.total("published"):
        raise typer.Exit(1)  # every line was refused: nothing could be sent


def tail(path: Annotated[Path, typer.Argument(
            help="The alerts file, e.g. /var/ossec/logs/alerts/alerts.json.")],
         tenant: Annotated[str | None, typer.Option(
             help="Tenant the alerts belong to (default: tenants.default_tenant).")] = None,
         from_start: Annotated[bool, typer.Option(
             help="With no checkpoint yet, start at the beginning, not the end.")] = False,
         position_file: Annotated[Path | None, typer.Option(
             help="Checkpoint file (default: <state_dir>/tail/<file name>.position).")]
         = None,
         ) -> None:
    """Follow a Wazuh alerts.json into alerts.raw across rotation and truncation,
    remembering the position (at least once)."""
    import asyncio

    settings = command_settings(Need.KAFKA)
    tenant_id = tenant or settings.tenants.default_tenant
    positions = position_file or settings.state_dir / "tail" / f"{path.name}.position"
    console.print(f"following {path} → {settings.kafka.topics.raw} (tenant {tenant_id}); "
                  f"position in {positions}")
    asyncio.run(_tail(settings, path, tenant_id, from_start, positions))


async def _tail(settings: Settings, path: Path, tenant_id: str, from_start: bool,
                positions: Path) -> None:
    from pipeline.kafka.producer import open_alert_sink
    from pipeline.shutdown import stop_on_signals
    from pipeline.sources.tail import PositionFile, Tailer

    stop = stop_on_signals()
    async with open_alert_sink(settings, settings.kafka.topics.raw, priority="live") as sink:
        tailer = Tailer(path, sink, PositionFile(positions), tenant_id=tenant_id,
                        from_start=from_start)
        await tailer.run(stop, settings.ingest.tail_poll_s)
    if tailer.dead_lettered:
        console.print(f"{tailer.dead_lettered} lines refused → {settings.kafka.topics.dlq} "
                      "(see the warnings)")


def wazuh_writeback() -> None:
    """Write verdicts of the tenants in ingest.writeback_tenants back into Wazuh 4.x
    (the manager's queue socket; run on the manager; rules in deploy/wazuh/)."""
    import asyncio

    settings = command_settings(Need.KAFKA)
    if not settings.ingest.writeback_tenants:
        raise typer.BadParameter("no tenant opted in: set ingest.writeback_tenants "
                                 "(SECANALYST_INGEST__WRITEBACK_TENANTS='[\"acme\"]')")
    console.print(f"writing verdicts of {', '.join(settings.ingest.writeback_tenants)} to "
                  f"{settings.ingest.wazuh_queue_socket}")
    asyncio.run(_writeback(settings))


async def _writeback(settings: Settings) -> None:
    """Start the write-back consumer (consumers/writeback.py) until SIGINT / SIGTERM."""
    from consumers.writeback import register as register_writeback
    from pipeline.shutdown import stop_on_signals
    from pipeline.sources.writeback import QueueSocket
    from pipeline.worker import BrokerPublisher, build_broker
    from pipeline.worker_health import HealthServer, WorkerHealth

    stop = stop_on_signals()
    queue = QueueSocket(settings.ingest.wazuh_queue_socket)
    broker = build_broker(settings)
    register_writeback(broker, settings, queue, BrokerPublisher(broker))
    health = None
    try:
        if settings.worker.health_port is not None:  # /livez, /readyz, /metrics
            health = HealthServer(WorkerHealth(broker, None,
                                               checks={"wazuh_queue": queue.readiness}),
                                  settings.worker.health_host, settings.worker.health_port)
            await health.start()
        await broker.start()
        await stop.wait()
    finally:
        if health is not None:
            await health.stop()
        await broker.stop()
        queue.close()


def register(app: typer.Typer) -> None:
    app.command("ingest-server")(ingest_server)
    app.command("backfill")(backfill)
    app.command("tail")(tail)
    app.command("wazuh-writeback")(wazuh_writeback)
