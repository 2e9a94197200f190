"""Storm de-duplication on the real pipeline: one incident, one LLM call."""

from __future__ import annotations

import asyncio

import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from bench.common import storm_alerts
from bench.storm import near_storm_alerts
from pipeline.analysis.normalize import normalize
from pipeline.config import Settings
from pipeline.sources.ingest_file import publish_lines
from tests.integration.conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


async def rows(db: AsyncConnectionPool, sql: str, *params: object) -> list[dict]:
    async with db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()


async def test_a_storm_costs_one_llm_call_and_every_alert_gets_a_verdict(
        settings: Settings, db: AsyncConnectionPool, worker: asyncio.Task) -> None:
    tenant = f"storm-{settings.kafka.group_prefix}"
    storm = storm_alerts(60)
    ids = {normalize(a, tenant_id=tenant).alert_id for a in storm}
    assert len({normalize(a, tenant_id=tenant).fingerprint for a in storm}) == 1
    await publish_lines(settings, storm, tenant_id=tenant)

    async def all_done() -> list[dict] | None:
        found = await rows(db, "SELECT * FROM verdicts WHERE tenant_id = %s", tenant)
        return found if {r["alert_id"] for r in found} >= ids else None

    verdicts = await wait_for(all_done, timeout_s=600)
    assert verdicts, "every storm alert must get a verdict row"
    originals = [v for v in verdicts if v["reused_from"] is None]
    reused = [v for v in verdicts if v["reused_from"] is not None]
    assert len(originals) == 1 and len(reused) == len(storm) - 1
    assert all(v["input_tokens"] == 0 and v["status"] == "reused" for v in reused)
    assert originals[0]["seen_count"] == len(storm)
    usage = await rows(db, "SELECT * FROM llm_usage_events WHERE tenant_id = %s", tenant)
    assert {u["alert_id"] for u in usage} == {originals[0]["alert_id"]}

    # Escalation: the same incident at a higher level gets a fresh verdict.
    escalated = storm_alerts(1, seed=99, level=12)
    escalated_id = normalize(escalated[0], tenant_id=tenant).alert_id
    await publish_lines(settings, escalated, tenant_id=tenant)

    async def fresh() -> list[dict] | None:
        found = await rows(db, "SELECT * FROM verdicts WHERE tenant_id = %s AND alert_id = %s",
                           tenant, escalated_id)
        return found or None

    row = (await wait_for(fresh, timeout_s=300))[0]
    assert row["reused_from"] is None and row["input_tokens"] > 0


async def test_one_scanner_against_30_agents_costs_at_most_two_llm_calls(
        settings: Settings, db: AsyncConnectionPool, worker: asyncio.Task) -> None:
    """30 fingerprints of one incident run concurrently; single-flight makes the rest
    wait for the first call and reuse its verdict as near-duplicates."""
    tenant = f"near-storm-{settings.kafka.group_prefix}"
    farm = near_storm_alerts(30)
    normalized = [normalize(a, tenant_id=tenant) for a in farm]
    assert len({a.fingerprint for a in normalized}) == 30
    assert len({a.incident_key for a in normalized}) == 1
    ids = {a.alert_id for a in normalized}
    await publish_lines(settings, farm, tenant_id=tenant)

    async def all_done() -> list[dict] | None:
        found = await rows(db, "SELECT * FROM verdicts WHERE tenant_id = %s", tenant)
        return found if {r["alert_id"] for r in found} >= ids else None

    verdicts = await wait_for(all_done, timeout_s=600)
    assert verdicts, "every alert of the near-storm must get a verdict row"
    originals = [v for v in verdicts if v["reused_from"] is None]
    assert 1 <= len(originals) <= 2
    reused = [v for v in verdicts if v["reused_from"] is not None]
    assert all(v["provenance"]["match"].startswith("near-duplicate") for v in reused)
    await asyncio.sleep(1.5)  # the usage writer flushes in batches
    usage = await rows(db, "SELECT * FROM llm_usage_events WHERE tenant_id = %s", tenant)
    assert {u["alert_id"] for u in usage} <= {o["alert_id"] for o in originals}
    assert 1 <= len(usage) <= 2, f"{len(usage)} LLM calls for one incident on 30 agents"
