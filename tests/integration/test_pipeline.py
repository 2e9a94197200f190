"""The whole pipeline on the real embedded stack: Tansu (Kafka protocol), PostgreSQL +
pgvector, MiniLM embeddings and real vLLM on CPU."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from pipeline.analysis import attack
from pipeline.analysis.normalize import normalize
from pipeline.analysis.severity import band_for_level
from pipeline.cli.demo import expected_alert_ids
from pipeline.config import Settings
from pipeline.sources.ingest_file import publish_lines
from schemas.verdict import SEVERITIES
from tests.integration.conftest import wait_for
from tests.integration.kafka_helpers import read_topic

ROOT = Path(__file__).parents[2]
SAMPLES = [line for line in (ROOT / "samples" / "wazuh-alerts.jsonl").read_bytes().splitlines()
           if line.strip()]
BAD = [line for line in (ROOT / "tests" / "data" / "bad-alerts.jsonl").read_bytes().splitlines()
       if line.strip()]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]


async def verdict_rows(db: AsyncConnectionPool, tenant: str) -> list[dict]:
    async with db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM verdicts WHERE tenant_id = %s", (tenant,))
        return await cur.fetchall()


async def usage_rows(db: AsyncConnectionPool, tenant: str) -> list[dict]:
    async with db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM llm_usage_events WHERE tenant_id = %s", (tenant,))
        return await cur.fetchall()


async def test_sample_alerts_become_verdicts_and_usage_rows(
        settings: Settings, tenant: str, db: AsyncConnectionPool, worker: asyncio.Task) -> None:
    assert await publish_lines(settings, SAMPLES, tenant_id=tenant) == len(SAMPLES)
    expected = set(expected_alert_ids(SAMPLES, tenant))

    async def all_verdicts() -> list[dict] | None:
        assert not worker.done(), worker.exception()
        rows = await verdict_rows(db, tenant)
        return rows if {r["alert_id"] for r in rows} >= expected else None

    rows = await wait_for(all_verdicts, timeout_s=1500)
    assert rows, "not every sample alert got a verdict in time"
    assert {r["alert_id"] for r in rows} == expected
    wazuh_ids = {a.alert_id: a.wazuh_mitre_ids
                 for a in (normalize(line, tenant_id=tenant) for line in SAMPLES)}
    for row in rows:
        band = SEVERITIES.index(band_for_level(row["rule_level"]))
        assert abs(SEVERITIES.index(row["severity"]) - band) <= 1
        ids = [t["id"] for t in row["attack"]]
        assert set(wazuh_ids[row["alert_id"]]) <= set(ids), "Wazuh's ATT&CK ids must stay"
        assert all(attack.technique(t) is not None for t in ids if t not in
                   wazuh_ids[row["alert_id"]])
        assert row["summary"] and row["model_name"] == settings.llm.model_name

    # Storm reuse: an alert of an incident explained moments ago reuses that verdict.
    reused = {r["alert_id"] for r in rows if r["reused_from"] is not None}
    assert all(r["input_tokens"] == 0 for r in rows if r["alert_id"] in reused)
    assert len(reused) < len(rows) // 4

    def billed_tokens_by_alert(usage: list[dict]) -> dict[str, int]:
        totals: dict[str, int] = {}
        for u in usage:
            if u["status_code"] == 200:
                totals[u["alert_id"]] = totals.get(u["alert_id"], 0) + u["input_tokens"]
        return totals

    async def usage_complete() -> list[dict] | None:
        # Usage events are written in batches off the request path: wait until every
        # call of every verdict (a repair retry makes two) has landed.
        found = await usage_rows(db, tenant)
        totals = billed_tokens_by_alert(found)
        complete = all(totals.get(r["alert_id"], 0) == r["input_tokens"] for r in rows)
        return found if complete else None

    usage = await wait_for(usage_complete, timeout_s=30)
    assert usage, "every LLM call must leave a usage row"
    for row in usage:
        if row["status_code"] != 200:  # a call that failed (retried later): no tokens billed
            assert row["error_kind"] and row["output_tokens"] == 0 and row["ttft_ms"] is None
            continue
        assert row["input_tokens"] > 0
        assert row["output_tokens"] > 0 and row["total_tokens"] == (
            row["input_tokens"] + row["output_tokens"])
        assert row["ttft_ms"] is not None and row["total_latency_ms"] >= row["ttft_ms"]
    assert sum(row["status_code"] == 200 for row in usage) >= len(rows) - len(reused)

async def test_malformed_alerts_reach_the_dlq_with_reason_and_original_bytes(
        settings: Settings, tenant: str, worker: asyncio.Task) -> None:
    await publish_lines(settings, BAD, tenant_id=tenant)
    # The session's DLQ serves every test: wait for this tenant's letters only.
    letters = await read_topic(settings, settings.kafka.topics.dlq, until=len(BAD),
                               timeout_s=120, where=lambda m: m["tenant_id"] == tenant)
    assert len(letters) == len(BAD)
    assert sorted(letter["original"].encode() for letter in letters) == sorted(BAD)
    for letter in letters:
        assert letter["stage"] == "normalize" and letter["reason"]
        assert letter["tenant_id"] == tenant


async def test_redelivered_alert_makes_no_second_verdict_or_llm_call(
        settings: Settings, tenant: str, db: AsyncConnectionPool,
        worker: asyncio.Task) -> None:
    line = SAMPLES[0]
    alert_id = normalize(line, tenant_id=tenant).alert_id

    async def has_verdict() -> bool:
        return any(r["alert_id"] == alert_id for r in await verdict_rows(db, tenant))

    if not await has_verdict():  # runs alone too
        await publish_lines(settings, [line], tenant_id=tenant)
        assert await wait_for(has_verdict, timeout_s=600)
    calls_before = [u for u in await usage_rows(db, tenant) if u["alert_id"] == alert_id]

    published = [v for v in await read_topic(settings, settings.kafka.topics.verdicts,
                                             until=10_000, timeout_s=10)
                 if v["alert_id"] == alert_id]
    await publish_lines(settings, [line, line], tenant_id=tenant)  # at-least-once redelivery

    async def republished() -> bool:
        found = await read_topic(settings, settings.kafka.topics.verdicts, until=10_000,
                                 timeout_s=5)
        return len([v for v in found if v["alert_id"] == alert_id]) >= len(published) + 2

    assert await wait_for(republished, timeout_s=300), "redeliveries were not processed"
    rows = [r for r in await verdict_rows(db, tenant) if r["alert_id"] == alert_id]
    assert len(rows) == 1
    calls_after = [u for u in await usage_rows(db, tenant) if u["alert_id"] == alert_id]
    assert len(calls_after) == len(calls_before), "a redelivery must not call the LLM again"
    normalized = await read_topic(settings, settings.kafka.topics.normalized, until=10_000,
                                  timeout_s=5)
    mine = [m for m in normalized if m["alert_id"] == alert_id]
    assert mine and {m["_headers"]["tenant_id"] for m in mine} == {tenant}
