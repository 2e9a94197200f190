"""Monthly partitions of llm_usage_events: create them ahead, drop them past retention.

Partitions are named `llm_usage_events_pYYYY_MM` and cover [first of month, first of next
month) in UTC. Rows no monthly partition covers land in `llm_usage_events_default`;
creating a month moves that month's rows out of the default partition first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg import sql

PARENT = "llm_usage_events"
DEFAULT_PARTITION = f"{PARENT}_default"
# Half of each page kept free: a settled row's new version fits beside it (a HOT update,
# no index touched: schemas/migrations/0013_usage_hot_settle.sql).
FILLFACTOR = 50
_NAME = re.compile(rf"^{PARENT}_p(\d{{4}})_(\d{{2}})$")


def month_start(moment: datetime, offset: int = 0) -> datetime:
    """The first instant (UTC) of the month `offset` months from `moment`'s month."""
    moment = moment.astimezone(UTC)
    index = moment.year * 12 + moment.month - 1 + offset
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"{PARENT}_p{start.year:04d}_{start.month:02d}"


def monthly_partitions(conn: psycopg.Connection) -> dict[str, datetime]:
    """Our monthly partitions attached to the parent: name → month start."""
    rows = conn.execute(
        """SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           JOIN pg_class p ON p.oid = i.inhparent
           WHERE p.relname = %s""", (PARENT,)).fetchall()
    found: dict[str, datetime] = {}
    for (name,) in rows:
        match = _NAME.match(name)
        if match:
            found[name] = datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC)
    return found


def ensure_partitions(conn: psycopg.Connection, *, months_ahead: int,
                      now: datetime | None = None) -> list[str]:
    """Create the partitions of this month and the next `months_ahead` months that are
    missing; return the names created. Idempotent."""
    now = now or datetime.now(UTC)
    existing = monthly_partitions(conn)
    created: list[str] = []
    for offset in range(months_ahead + 1):
        start, end = month_start(now, offset), month_start(now, offset + 1)
        name = partition_name(start)
        if name in existing:
            continue
        with conn.transaction():
            _create_partition(conn, name, start, end)
        created.append(name)
    return created


def _create_partition(conn: psycopg.Connection, name: str, start: datetime,
                      end: datetime) -> None:
    table, parent, default = (sql.Identifier(n) for n in (name, PARENT, DEFAULT_PARTITION))
    has_rows = conn.execute(
        sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE created_at >= %s AND created_at < %s)")
        .format(default), (start, end)).fetchone()
    if not (has_rows and has_rows[0]):
        conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({}) "
                             "WITH (fillfactor = {})")
                     .format(table, parent, sql.Literal(start), sql.Literal(end),
                             sql.Literal(FILLFACTOR)))
        return
    # The default partition holds rows of this month: move them into a table of the
    # same shape, then attach it (attaching checks the default has none left).
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
                         "WITH (fillfactor = {})").format(table, parent, sql.Literal(FILLFACTOR)))
    conn.execute(sql.SQL("WITH moved AS (DELETE FROM {} WHERE created_at >= %s AND "
                         "created_at < %s RETURNING *) INSERT INTO {} SELECT * FROM moved")
                 .format(default, table), (start, end))
    conn.execute(sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})")
                 .format(parent, table, sql.Literal(start), sql.Literal(end)))


@dataclass(frozen=True)
class RetentionPlan:
    cutoff: datetime           # rows before this instant are dropped
    partitions: list[str]      # monthly partitions entirely before the cutoff
    default_rows: int          # rows of the default partition before the cutoff
    applied: bool


def apply_retention(conn: psycopg.Connection, *, keep_months: int, dry_run: bool,
                    now: datetime | None = None) -> RetentionPlan:
    """Keep the current month and the `keep_months - 1` before it; detach and drop every
    older monthly partition and delete older stragglers of the default partition."""
    if keep_months < 1:
        raise ValueError("keep_months must be at least 1 (the current month)")
    cutoff = month_start(now or datetime.now(UTC), -(keep_months - 1))
    old = sorted(name for name, start in monthly_partitions(conn).items()
                 if month_start(start, 1) <= cutoff)
    default = sql.Identifier(DEFAULT_PARTITION)
    counted = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE created_at < %s")
                           .format(default), (cutoff,)).fetchone()
    plan = RetentionPlan(cutoff=cutoff, partitions=old,
                         default_rows=int(counted[0]) if counted else 0, applied=not dry_run)
    if dry_run:
        return plan
    for name in old:
        with conn.transaction():
            conn.execute(sql.SQL("ALTER TABLE {} DETACH PARTITION {}")
                         .format(sql.Identifier(PARENT), sql.Identifier(name)))
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
    if plan.default_rows:
        with conn.transaction():
            conn.execute(sql.SQL("DELETE FROM {} WHERE created_at < %s").format(default),
                         (cutoff,))
    return plan
