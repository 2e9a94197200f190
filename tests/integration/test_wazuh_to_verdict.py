"""Issue #5 end to end on the real stack: the Wazuh 4.x integration script, run as
integratord runs it, against the real ingest server, gets an alert into a verdict through
Kafka → normalize → embed → retrieve → explain (real vLLM); and a backfill killed halfway
and run again ends with exactly one verdict per alert."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bench.common import varied_alerts
from pipeline.cli.usage import new_api_key
from pipeline.config import Settings
from tests.integration.conftest import wait_for
from tests.servers import free_port

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "deploy" / "wazuh" / "custom-secanalyst"
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


def service_env(settings: Settings, state: Path) -> dict[str, str]:
    """The session's settings as environment, for the real CLI processes."""
    topics = settings.kafka.topics
    return {**os.environ, "SECANALYST_STATE_DIR": str(state),
            "SECANALYST_DATABASE__URL": settings.database_url,
            "SECANALYST_KAFKA__BOOTSTRAP_SERVERS": settings.kafka_bootstrap,
            "SECANALYST_KAFKA__TOPICS__RAW": topics.raw,
            "SECANALYST_KAFKA__TOPICS__BACKFILL": topics.backfill,
            "SECANALYST_KAFKA__TOPICS__DLQ": topics.dlq,
            "SECANALYST_GATEWAY__API_KEY_CACHE_S": "0",
            "SECANALYST_INGEST__CONFIRM_ABOVE_COST": "1000000",
            "SECANALYST_LOG_FORMAT": "json", "COLUMNS": "200"}


async def verdicts(db: AsyncConnectionPool, tenant: str) -> list[dict]:
    async with db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT alert_id, status FROM verdicts WHERE tenant_id = %s",
                          (tenant,))
        return await cur.fetchall()


async def test_integratord_hook_alert_becomes_a_verdict(
        settings: Settings, db: AsyncConnectionPool, worker: asyncio.Task,
        tmp_path: Path) -> None:
    tenant = f"hook-{settings.kafka.group_prefix}"
    _, key = await new_api_key(settings.model_copy(update={"state_dir": tmp_path}), tenant,
                               "wazuh-manager")
    port = free_port()
    server = subprocess.Popen([str(ROOT / ".venv/bin/secanalyst"), "ingest-server", "--port",
                               str(port)], cwd=tmp_path, env=service_env(settings, tmp_path))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).is_success:
                    break
            except httpx.HTTPError:
                await asyncio.sleep(0.3)
        alert = json.loads(varied_alerts(1, seed=1234)[0])
        alert_file = tmp_path / "1732761234-5678.alert"
        alert_file.write_text(json.dumps(alert))
        # integratord: <script> <alert file> <api_key> <hook_url> [debug] [options] ...
        hook = await asyncio.to_thread(
            subprocess.run, [sys.executable, str(SCRIPT), str(alert_file), key,
                             f"http://127.0.0.1:{port}/ingest/wazuh"],
            env={**os.environ, "SECANALYST_INTEGRATION_LOG": str(tmp_path / "int.log")},
            timeout=60, check=False)
        assert hook.returncode == 0, (tmp_path / "int.log").read_text()

        async def explained() -> list[dict] | None:
            rows = await verdicts(db, tenant)
            return rows if any(r["alert_id"] == alert["id"] for r in rows) else None

        assert await wait_for(explained, timeout_s=600), "the hook's alert got no verdict"
    finally:
        server.terminate()
        server.wait(15)


async def test_backfill_killed_halfway_then_rerun_gives_one_verdict_per_alert(
        settings: Settings, db: AsyncConnectionPool, worker: asyncio.Task,
        tmp_path: Path) -> None:
    tenant = f"backfill-{settings.kafka.group_prefix}"
    # 16 alerts at 4/s, killed partway (the CLI's start takes most of the 2.5 s). Each is
    # a real vLLM call, seconds each on a 2-core AVX2 host, so the count is kept small.
    alerts = varied_alerts(16, seed=4321)
    ids = {json.loads(a)["id"] for a in alerts}
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "ossec-alerts-27.json.gz").write_bytes(gzip.compress(b"\n".join(alerts) + b"\n"))
    command = [str(ROOT / ".venv/bin/secanalyst"), "backfill", str(archive), "--tenant",
               tenant, "--rate", "4", "--yes"]
    env = service_env(settings, tmp_path)
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    await asyncio.sleep(2.5)  # the CLI's start, then a few alerts sent of 16
    first.send_signal(signal.SIGKILL)  # a crash, not a polite stop
    first.wait(10)
    rerun = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True,
                                    text=True, timeout=300, check=False)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr

    async def all_explained() -> list[dict] | None:
        rows = await verdicts(db, tenant)
        return rows if {r["alert_id"] for r in rows} >= ids else None

    rows = await wait_for(all_explained, timeout_s=600)
    assert rows, "not every backfilled alert got a verdict"
    assert sorted(r["alert_id"] for r in rows) == sorted(ids)  # exactly one each
