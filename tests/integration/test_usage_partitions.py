"""llm_usage_events partitioned by month, on a real PostgreSQL of this module's own:
migration of existing rows, partitions ahead, retention, and the usage report's numbers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from pipeline.config import ModelPrice
from pipeline.devstack.postgres import EmbeddedPostgres
from pipeline.store.migrate import _TRACKING, available_migrations, migrate
from pipeline.store.usage import copy_usage_events
from pipeline.store.usage_partitions import (
    apply_retention,
    ensure_partitions,
    month_start,
    monthly_partitions,
    partition_name,
)
from pipeline.store.usage_report import usage_report
from schemas.usage import UsageEvent
from tests.servers import free_port

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)
LEGACY_OLD = month_start(NOW, -20) + timedelta(days=3)


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh server; the first schema with rows in it, then every later migration."""
    server = EmbeddedPostgres(state_dir=tmp_path_factory.mktemp("pg-usage"), port=free_port())
    server.start()
    try:
        url = server.address()
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(_TRACKING)
            version, first_sql = available_migrations()[0]
            conn.execute(first_sql.encode())
            conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            for created in (LEGACY_OLD, NOW, None):
                conn.execute(
                    """INSERT INTO llm_usage_events (id, tenant_id, model_name, input_tokens,
                           output_tokens, total_tokens, status_code, created_at)
                       VALUES (%s, 'legacy', 'm', 5, 1, 6, 200, %s)""",
                    (uuid.uuid4(), created))
        migrate(url)
        with psycopg.connect(url, autocommit=True) as conn:
            ensure_partitions(conn, months_ahead=2)
        yield url
    finally:
        server.stop()


def test_partitioned_with_months_ahead_and_existing_rows_kept(database: str) -> None:
    with psycopg.connect(database, autocommit=True) as conn:
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = "
                            "'llm_usage_events'").fetchone()
        assert kind == ("p",)
        names = set(monthly_partitions(conn))
        for offset in range(3):
            assert partition_name(month_start(NOW, offset)) in names
        assert partition_name(month_start(LEGACY_OLD)) in names
        rows = conn.execute("SELECT tableoid::regclass::text, created_at IS NOT NULL "
                            "FROM llm_usage_events WHERE tenant_id = 'legacy'").fetchall()
        assert sorted(r[0] for r in rows) == sorted(
            [partition_name(month_start(LEGACY_OLD))] + [partition_name(month_start(NOW))] * 2)
        assert all(r[1] for r in rows)
        # idempotent
        assert ensure_partitions(conn, months_ahead=2) == []


def event(tenant: str, created: datetime, *, status: int = 200, ttft: int | None = None,
          model: str = "m", tokens: tuple[int, int] = (100, 10)) -> UsageEvent:
    return UsageEvent(tenant_id=tenant, model_name=model, pool="default", replica="r",
                      request_id=uuid.uuid4().hex, input_tokens=tokens[0],
                      output_tokens=tokens[1], ttft_ms=ttft, status_code=status,
                      error_kind=None if status == 200 else "x", created_at=created)


async def write(url: str, events: list[UsageEvent]) -> None:
    async with await psycopg.AsyncConnection.connect(url) as conn, conn.transaction():
        await copy_usage_events(conn, events)


async def test_default_rows_move_into_a_new_month_partition(database: str) -> None:
    far = month_start(NOW, 6) + timedelta(days=1)  # beyond the partitions made ahead
    await write(database, [event("ahead", far)])
    with psycopg.connect(database, autocommit=True) as conn:
        where = "SELECT tableoid::regclass::text FROM llm_usage_events WHERE tenant_id='ahead'"
        assert conn.execute(where).fetchone() == ("llm_usage_events_default",)
        created = ensure_partitions(conn, months_ahead=6, now=NOW)
        assert partition_name(month_start(far)) in created
        assert conn.execute(where).fetchone() == (partition_name(month_start(far)),)


async def test_retention_drops_old_months_and_keeps_recent_rows(database: str) -> None:
    straggler = month_start(NOW, -14) + timedelta(days=2)  # no partition: in the default
    await write(database, [event("ret", straggler), event("ret", NOW),
                           event("ret", month_start(NOW, -1) + timedelta(hours=1))])
    old_partition = partition_name(month_start(LEGACY_OLD))
    with psycopg.connect(database, autocommit=True) as conn:
        plan = apply_retention(conn, keep_months=3, dry_run=True)
        assert plan.cutoff == month_start(NOW, -2)
        assert plan.partitions == [old_partition] and plan.default_rows == 1
        assert old_partition in monthly_partitions(conn)  # dry run changed nothing

        plan = apply_retention(conn, keep_months=3, dry_run=False)
        assert plan.applied and old_partition not in monthly_partitions(conn)
        assert conn.execute("SELECT to_regclass(%s)", (old_partition,)).fetchone() == (None,)
        left = conn.execute("SELECT count(*) FROM llm_usage_events WHERE tenant_id = 'ret'"
                            ).fetchone()
        assert left == (2,)
        legacy = conn.execute("SELECT count(*) FROM llm_usage_events "
                              "WHERE tenant_id = 'legacy'").fetchone()
        assert legacy == (2,)  # this month's legacy rows stay


async def test_usage_report_numbers_match_the_rows(database: str) -> None:
    tenant = f"rep-{uuid.uuid4().hex[:6]}"
    at = NOW - timedelta(minutes=5)
    rows = [event(tenant, at, ttft=t, tokens=(1000, 100)) for t in (100, 200, 300, 400)]
    rows += [event(tenant, at, status=429), event(tenant, at, status=429),
             event(tenant, at, status=503), event(tenant, at, status=413),
             event(tenant, at, status=502),
             event(tenant, at, ttft=50, model="big", tokens=(2_000_000, 500_000)),
             event(tenant, NOW - timedelta(days=3), ttft=9999)]  # outside the period
    await write(database, rows)
    pricing = {"default": ModelPrice(input_per_million=1.0, output_per_million=2.0),
               "big": ModelPrice(input_per_million=10.0, output_per_million=30.0)}
    with psycopg.connect(database) as conn:
        report = usage_report(conn, since=NOW - timedelta(hours=1), until=NOW,
                              pricing=pricing, tenant=tenant)
        everyone = usage_report(conn, since=NOW - timedelta(hours=1), until=NOW,
                                pricing=pricing)
    assert [(r.tenant_id, r.model_name) for r in report] == [(tenant, "big"), (tenant, "m")]
    big, small = report
    assert (small.requests, small.succeeded) == (9, 4)
    assert (small.input_tokens, small.output_tokens) == (4000, 400)
    assert small.ttft_p50_ms == pytest.approx(250.0)
    assert small.ttft_p95_ms == pytest.approx(385.0)
    assert (small.rejected_429, small.rejected_503, small.rejected_413,
            small.failed_other) == (2, 1, 1, 1)
    assert small.estimated_cost == pytest.approx((4000 * 1.0 + 400 * 2.0) / 1e6)
    assert big.estimated_cost == pytest.approx(2 * 10.0 + 0.5 * 30.0)
    assert {r.tenant_id for r in everyone} >= {tenant}
