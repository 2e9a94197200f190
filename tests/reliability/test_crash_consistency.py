"""Crash consistency: alerts through the whole pipeline (one `secanalyst run --stage X`
process per stage, real broker, PostgreSQL and vLLM) while a randomly chosen stage process
is SIGKILLed at random moments and started again. At the end every alert has exactly one
verdict or a dead letter with a reason, no alert got two different verdicts on the
verdicts topic, and no usage event was recorded twice.

CI size: 16 alerts, 3 kills; `make reliability`: 120 alerts, 12 kills."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from bench.common import varied_alerts
from pipeline.analysis.runbook_loader import load_runbooks
from pipeline.cli.demo import expected_alert_ids
from pipeline.config import Settings
from pipeline.runtime import STAGES
from pipeline.sources.ingest_file import publish_lines
from tests.integration.kafka_helpers import read_topic
from tests.reliability.conftest import full_size
from tests.reliability.outcome import letter_alert_id, twice_verdicted
from tests.reliability.report import report_figure, report_row
from tests.reliability.stages import StageProcesses, settings_env

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.timeout(3600)


async def _outcome(db: AsyncConnectionPool, settings: Settings, tenant: str,
                   expected: set[str]) -> tuple[set[str], set[str]]:
    """(alert ids with a verdict, alert ids with a dead letter that gives a reason)."""
    async with db.connection() as conn:
        cur = await conn.execute("SELECT alert_id FROM verdicts WHERE tenant_id = %s",
                                 (tenant,))
        verdicted = {row[0] for row in await cur.fetchall()} & expected
    letters = await read_topic(settings, settings.kafka.topics.dlq, until=10**9, timeout_s=2)
    dead = {letter_alert_id(letter, tenant) for letter in letters
            if letter.get("reason") and letter.get("tenant_id") in (tenant, None)}
    return verdicted, dead & expected


async def test_random_kills_lose_nothing_and_duplicate_nothing(
        settings: Settings, tenant: str, db: AsyncConnectionPool, tmp_path: Path) -> None:
    alerts_n, kills_wanted = full_size(16, 120), full_size(3, 12)
    rng = random.Random(20261201)
    await load_runbooks(settings, ROOT / "runbooks")
    lines = varied_alerts(alerts_n, seed=rng.randrange(10**6))
    expected = set(expected_alert_ids(lines, tenant))
    procs = StageProcesses(settings_env(settings), tmp_path)
    for stage in STAGES:
        procs.start(stage)
    kills = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + full_size(1500, 3000)
    try:
        assert await publish_lines(settings, lines, tenant_id=tenant) == alerts_n
        while loop.time() < deadline:
            verdicted, dead = await _outcome(db, settings, tenant, expected)
            if verdicted | dead >= expected and kills >= kills_wanted:
                break
            assert not procs.dead(), f"stage process(es) {procs.dead()} exited by themselves"
            if kills < kills_wanted and len(verdicted) < len(expected):
                # A random moment: the stages are mid-batch most of the time.
                await asyncio.sleep(rng.uniform(3, 12))
                victim = rng.choice(STAGES)
                procs.kill(victim)
                kills += 1
                await asyncio.sleep(rng.uniform(0, 2))
                procs.start(victim)
            else:
                await asyncio.sleep(2)
        verdicted, dead = await _outcome(db, settings, tenant, expected)
    finally:
        procs.stop_all()

    lost = expected - verdicted - dead
    published = await read_topic(settings, settings.kafka.topics.verdicts, until=10**9,
                                 timeout_s=3)
    duplicated = twice_verdicted(published, tenant)
    async with db.connection() as conn:
        cur = await conn.execute(
            """SELECT count(*) - count(DISTINCT request_id) FROM llm_usage_events
               WHERE tenant_id = %s""", (tenant,))
        row = await cur.fetchone()
    usage_twice = int(row[0]) if row else -1
    outcome = {"alerts in": alerts_n, "kills survived": kills, "verdicted": len(verdicted),
               "dead-lettered": len(dead - verdicted), "lost": len(lost),
               "duplicated": len(duplicated), "usage rows recorded twice": usage_twice}
    report_row("crash consistency (random SIGKILL of stage processes)", outcome)
    report_figure("reliability.kills_survived", kills, goal="≥ 10 in one run")
    report_figure("reliability.alerts_lost", len(lost), goal="0")
    report_figure("reliability.verdicts_duplicated", len(duplicated), goal="0")
    assert kills >= kills_wanted
    assert not lost, f"{len(lost)} alerts have neither a verdict nor a dead letter: {lost}"
    assert not duplicated, f"alerts with two different verdicts published: {duplicated}"
    assert usage_twice == 0

