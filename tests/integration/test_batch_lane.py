"""The batch lane on the real stack: backfill alerts travel their own topics to verdicts,
and live alerts overtake a pending backfill instead of queueing behind it."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from psycopg_pool import AsyncConnectionPool

from bench.live_with_backfill import distinct_alerts, verdict_times
from pipeline.analysis.normalize import normalize
from pipeline.config import Settings
from pipeline.sources.ingest_file import publish_lines
from tests.integration.conftest import wait_for
from tests.integration.kafka_helpers import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]


async def wait_for_verdicts(db: AsyncConnectionPool, tenant: str, ids: set[str],
                            timeout_s: float) -> dict[str, datetime]:
    async def done() -> dict[str, datetime] | None:
        found = await verdict_times(db, tenant)
        return found if ids <= found.keys() else None

    found = await wait_for(done, timeout_s=timeout_s, interval_s=0.5)
    assert found, f"{tenant}: not every alert got a verdict in {timeout_s:.0f} s"
    return found


def alert_ids(lines: list[bytes], tenant: str) -> set[str]:
    return {normalize(line, tenant_id=tenant).alert_id for line in lines}


async def ids_on(settings: Settings, topic: str, tenant: str) -> dict[str, str]:
    """alert id → priority header of every message of `tenant` on `topic`."""
    messages = await read_topic(settings, topic, until=100_000, timeout_s=5)
    return {m["_headers"]["alert_id"]: m["_headers"]["priority"] for m in messages
            if m["_headers"].get("tenant_id") == tenant}


async def test_backfill_alerts_travel_the_batch_topics_to_verdicts(
        settings: Settings, db: AsyncConnectionPool, worker: asyncio.Task[None]) -> None:
    tenant = f"lane-{settings.kafka.group_prefix}"
    lines = distinct_alerts(4, seed=31)
    ids = alert_ids(lines, tenant)
    topics = settings.kafka.topics
    await publish_lines(settings, lines, tenant_id=tenant, topic=topics.backfill,
                        priority="batch")
    await wait_for_verdicts(db, tenant, ids, timeout_s=600)

    for topic in (topics.normalized_batch, topics.embedded_batch, topics.enriched_batch):
        assert await ids_on(settings, topic, tenant) == {i: "batch" for i in ids}, topic
    for topic in (topics.normalized, topics.embedded, topics.enriched):
        assert not await ids_on(settings, topic, tenant), f"backfill leaked into {topic}"
    async with db.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT priority FROM llm_usage_events WHERE tenant_id = %s", (tenant,))
        assert [row[0] for row in await cur.fetchall()] == ["batch"], \
            "backfill LLM calls must keep the batch class in the router"


async def test_live_alerts_overtake_a_pending_backfill(
        settings: Settings, db: AsyncConnectionPool, worker: asyncio.Task[None]) -> None:
    prefix = settings.kafka.group_prefix
    batch_tenant, live_tenant = f"backlog-{prefix}", f"live-{prefix}"
    backlog = distinct_alerts(30, seed=41)  # each needs its own LLM call
    live = distinct_alerts(3, seed=43)
    backlog_ids, live_ids = alert_ids(backlog, batch_tenant), alert_ids(live, live_tenant)
    await publish_lines(settings, backlog, tenant_id=batch_tenant,
                        topic=settings.kafka.topics.backfill, priority="batch")

    async def backlog_started() -> bool:
        return bool(await verdict_times(db, batch_tenant))

    # The backlog is in the pipeline (its first verdict is in): now live alerts arrive.
    assert await wait_for(backlog_started, timeout_s=600, interval_s=0.5)
    await publish_lines(settings, live, tenant_id=live_tenant)
    live_done = await wait_for_verdicts(db, live_tenant, live_ids, timeout_s=600)
    backlog_done = await wait_for_verdicts(db, batch_tenant, backlog_ids, timeout_s=1200)

    last_live = max(live_done[i] for i in live_ids)
    after_live = sorted(t for i, t in backlog_done.items() if i in backlog_ids and t > last_live)
    # Without the lane the live alerts queue behind the whole backlog in every stage (the
    # explain stage takes it in one batch): no backlog verdict would come after them.
    assert len(after_live) >= len(backlog) // 4, (
        f"only {len(after_live)} of {len(backlog)} backlog verdicts came after the live "
        f"alerts: live waited for the backlog")
