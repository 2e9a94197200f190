"""`secanalyst tenants export|purge` on a private PostgreSQL seeded with two tenants:
export holds every table's rows of the tenant and no secret; purge leaves nothing of it in
any tenant table and does not touch the other tenant."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pipeline.store.apikeys import create_key
from pipeline.store.tenant_data import SECRET_COLUMNS, count_rows, tenant_tables, write_export
from tests.e2e.console_seed import Seeded, console_database

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    with console_database() as seeded:
        asyncio.run(_hook_keys(seeded.url, ("acme", "globex")))
        with psycopg.connect(seeded.url) as conn:
            for tenant in ("acme", "globex"):
                verdict_id = seeded.ids[tenant][0]
                conn.execute(
                    """INSERT INTO feedback (tenant_id, verdict_id, user_email, action, note)
                       VALUES (%s, %s, %s, 'note', 'looked at it')""",
                    (tenant, verdict_id, f"analyst@{tenant}.test"))
        yield seeded


async def _hook_keys(url: str, tenants: tuple[str, ...]) -> None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for tenant in tenants:
            await create_key(conn, b"test-pepper", tenant, "hook")


def _cli(seeded: Seeded, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {"SECANALYST_DATABASE__URL": seeded.url, "SECANALYST_LOG_FORMAT": "json",
           "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    return subprocess.run([sys.executable, "-m", "pipeline.cli.app", *args], cwd=ROOT, env=env,
                          input=stdin, capture_output=True, text=True, timeout=120)


def test_export_holds_every_table_and_no_secret(seeded: Seeded) -> None:
    with psycopg.connect(seeded.url) as conn:
        held = {t: n for t, n in count_rows(conn, "acme").items() if n}
        out = io.StringIO()
        counts = write_export(conn, "acme", out)
    assert counts == held
    # The seed put acme rows in each of these; the export must carry every one of them.
    assert {"alerts", "verdicts", "llm_usage_events", "feedback", "audit_log", "api_keys",
            "console_users", "tenants"} <= set(counts)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == sum(counts.values())
    for line in lines:
        assert line["row"]["tenant_id"] == "acme"
        assert not SECRET_COLUMNS & set(line["row"])


def test_purge_leaves_nothing_of_the_tenant_and_spares_the_other(seeded: Seeded) -> None:
    with psycopg.connect(seeded.url) as conn:
        globex_before = count_rows(conn, "globex")
        acme_before = count_rows(conn, "acme")
    refused = _cli(seeded, "tenants", "purge", "acme", stdin="n\n")
    assert refused.returncode != 0, refused.stdout + refused.stderr
    with psycopg.connect(seeded.url) as conn:
        assert count_rows(conn, "acme") == acme_before  # "no" deletes nothing

    done = _cli(seeded, "tenants", "purge", "acme", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deleted" in done.stdout and "verdicts 8" in done.stdout
    with psycopg.connect(seeded.url) as conn:
        assert set(count_rows(conn, "acme").values()) == {0}
        assert count_rows(conn, "globex") == globex_before
        assert len(tenant_tables(conn)) >= 8
    again = _cli(seeded, "tenants", "export", "acme")
    assert again.returncode == 0 and again.stdout == ""
