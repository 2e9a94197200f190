"""Verdict quality against Wazuh's own facts (issue #4), with the real vLLM.

Every alert of `../shared/data/wazuh-alerts/alerts.jsonl` (when present) and of the
bundled samples goes through the whole pipeline. Reported per corpus: schema-valid
verdicts (a `Verdict` model validates the stored row), verdicts whose ATT&CK list holds
every Wazuh-provided id, ATT&CK ids outside the v18.1 catalog, severity within one band of
the rule level, and the explained / needs-review / reused split.

Run: .venv/bin/python -m bench.verdict_quality
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path
from typing import Any

from psycopg.rows import dict_row

from bench.common import ROOT, isolated_settings, machine, new_run_id, stamp
from pipeline.analysis import attack
from pipeline.analysis.normalize import NormalizationError, normalize
from pipeline.analysis.severity import band_for_level
from pipeline.kafka.admin import ensure_topics
from pipeline.logging import configure_logging
from pipeline.sources.ingest_file import publish_lines
from pipeline.store.database import open_pool
from pipeline.worker import run_worker
from schemas.verdict import SEVERITIES, Verdict

CORPORA = {"shared (real Wazuh)": ROOT.parent / "shared" / "data" / "wazuh-alerts" /
           "alerts.jsonl", "bundled samples": ROOT / "samples" / "wazuh-alerts.jsonl"}


async def evaluate(name: str, path: Path) -> str:
    run_id = new_run_id("bq")
    settings = isolated_settings(run_id)
    tenant = f"quality-{run_id}"
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    alerts = {}
    for line in lines:
        with contextlib.suppress(NormalizationError):
            alert = normalize(line, tenant_id=tenant)
            alerts[alert.alert_id] = alert
    await ensure_topics(settings)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, ["normalize", "embed", "retrieve",
                                                       "explain"], stop))
    pool = await open_pool(settings)
    await publish_lines(settings, lines, tenant_id=tenant)
    started, rows = time.perf_counter(), list[dict[str, Any]]()
    while len(rows) < len(alerts) and time.perf_counter() - started < 1800:
        await asyncio.sleep(2)
        async with pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT * FROM verdicts WHERE tenant_id = %s", (tenant,))
            rows = await cur.fetchall()
    stop.set()
    with contextlib.suppress(Exception):
        await worker
    await pool.close()
    valid = wazuh_kept = in_band = 0
    outside = 0
    status: dict[str, int] = {}
    for row in rows:
        alert = alerts[row["alert_id"]]
        with contextlib.suppress(Exception):
            Verdict.model_validate({k: v for k, v in row.items() if k in Verdict.model_fields})
            valid += 1
        ids = [t["id"] for t in row["attack"]]
        wazuh_kept += set(alert.wazuh_mitre_ids) <= set(ids)
        outside += sum(1 for t in ids if t not in alert.wazuh_mitre_ids
                       and attack.technique(t) is None)
        band = SEVERITIES.index(band_for_level(alert.rule_level))
        in_band += abs(SEVERITIES.index(row["severity"]) - band) <= 1
        status[row["status"]] = status.get(row["status"], 0) + 1
    n = len(alerts)
    return (f"{name}: {len(lines)} lines, {n} alerts, {len(rows)} verdicts | schema-valid "
            f"{valid}/{n} | Wazuh ATT&CK ids kept {wazuh_kept}/{n} | ids outside the "
            f"catalog {outside} | severity within one band {in_band}/{n} | "
            + ", ".join(f"{k} {v}" for k, v in sorted(status.items())))


def main() -> None:
    configure_logging("WARNING", "console")
    print(f"# verdict quality — {stamp()} — {machine()}")
    for name, path in CORPORA.items():
        if path.exists():
            print(asyncio.run(evaluate(name, path)))
        else:
            print(f"{name}: {path} not present, skipped")


if __name__ == "__main__":
    main()
