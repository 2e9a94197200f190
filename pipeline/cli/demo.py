"""The README's main job: the whole pipeline on the embedded stack, on the sample alerts."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.analysis.normalize import NormalizationError, normalize
from pipeline.analysis.runbook_loader import load_runbooks
from pipeline.config import Settings
from pipeline.devstack import stack
from pipeline.runtime import STAGES
from pipeline.sources.ingest_file import publish_lines
from pipeline.store.database import open_pool
from pipeline.store.migrate import migrate
from pipeline.store.verdicts import verdicts_for
from pipeline.worker import run_worker


def expected_alert_ids(lines: list[bytes], tenant_id: str) -> list[str]:
    ids = []
    for line in lines:
        with contextlib.suppress(NormalizationError):
            ids.append(normalize(line, tenant_id=tenant_id).alert_id)
    return ids


def run_demo(settings: Settings, samples: Path, *, tenant_id: str, timeout_s: float,
             console: Console) -> bool:
    console.rule("1/5 embedded stack")
    for row in stack.up(settings):
        console.print(f"  {row.name:<9} {'embedded' if row.embedded else 'external'}  "
                      f"{row.address}")
    console.rule("2/5 database schema")
    applied = migrate(settings.database_url)
    console.print(f"  applied: {', '.join(applied) or 'up to date'}")
    lines = [line.strip() for line in samples.read_bytes().splitlines() if line.strip()]
    alert_ids = expected_alert_ids(lines, tenant_id)
    return asyncio.run(_pipeline(settings, lines, alert_ids, tenant_id, timeout_s, console))


async def _pipeline(settings: Settings, lines: list[bytes], alert_ids: list[str],
                    tenant_id: str, timeout_s: float, console: Console) -> bool:
    console.rule("3/5 runbooks")
    report = await load_runbooks(settings, Path("runbooks"))
    console.print(f"  {report.chunks} chunks ({report.embedded} embedded now)")
    console.rule("4/5 pipeline: Kafka → normalize → embed → retrieve → explain (vLLM)")
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, STAGES, stop))
    sent = await publish_lines(settings, lines, tenant_id=tenant_id)
    console.print(f"  published {sent} alerts to {settings.kafka.topics.raw}")
    pool = await open_pool(settings)
    rows: list[dict[str, object]] = []
    try:
        deadline = time.monotonic() + timeout_s
        with Progress(TextColumn("  verdicts"), BarColumn(), TextColumn("{task.completed}/"
                      "{task.total}"), TimeElapsedColumn(), console=console) as progress:
            task = progress.add_task("verdicts", total=len(alert_ids))
            while time.monotonic() < deadline:
                if worker.done():
                    worker.result()  # raises the worker's error
                async with pool.connection() as conn:
                    rows = await verdicts_for(conn, tenant_id, alert_ids)
                progress.update(task, completed=len(rows))
                if len(rows) >= len(alert_ids):
                    break
                await asyncio.sleep(1.0)
        await asyncio.sleep(1.0)  # let the usage writer flush its last batch
        async with pool.connection() as conn:
            rows = await verdicts_for(conn, tenant_id, alert_ids)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await worker
        await pool.close()
    console.rule("5/5 verdicts")
    Console(width=max(console.width, 180)).print(verdict_table(rows))
    done = len(rows) >= len(alert_ids)
    console.print(f"{len(rows)}/{len(alert_ids)} alerts have a verdict"
                  + ("" if done else " — timed out; see .secanalyst/logs/"))
    return done


def verdict_table(rows: list[dict[str, object]]) -> Table:
    table = Table("alert", "rule", "severity", "ATT&CK", "summary", "in tok", "out tok",
                  show_lines=False, expand=True)
    for row in rows:
        attack = ", ".join(str(t["id"]) for t in row["attack"])  # type: ignore[attr-defined]
        table.add_row(str(row["alert_id"])[-18:], f"{row['rule_id']} (L{row['rule_level']})",
                      str(row["severity"]), attack or "-",
                      _short(str(row["summary"]), 160), str(row["usage_input_tokens"]),
                      str(row["usage_output_tokens"]))
    return table


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
