"""The review queue (filters, keyset pages, live updates) and one verdict as the console
shows it; read under the policies (`tenant_scope`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

ANALYST_STATUSES = ("new", "confirmed", "corrected", "false_positive")


@dataclass(frozen=True)
class QueueFilter:
    severity: str | None = None
    status: str | None = None
    rule: str | None = None
    agent: str | None = None
    src_ip: str | None = None  # pivots on the verdict's facts (migration 0009)
    dst_ip: str | None = None
    user: str | None = None
    host: str | None = None  # the agent in the verdict's facts (migration 0011)
    technique: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    search: str | None = None
    after: tuple[datetime, int] | None = None  # keyset: (created_at, id) of the last row


@dataclass
class QueuePage:
    rows: list[dict[str, Any]]
    next_cursor: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def encode_cursor(created_at: datetime, verdict_id: int) -> str:
    return f"{created_at.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%f')}_{verdict_id}"


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Raises ValueError for anything that is not a cursor we made."""
    when, _, verdict_id = cursor.partition("_")
    parsed = datetime.strptime(when, "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)
    return parsed, int(verdict_id)


_QUEUE_COLUMNS = """v.id, v.alert_id, v.rule_id, v.rule_level, v.severity, v.severity_source,
    v.summary, v.attack, v.status, v.analyst_status, v.seen_count, v.reused_from,
    v.created_at, v.incident_id"""


# The queue's plain filters: (QueueFilter field, its condition), in this order.
_CONDITIONS = (
    ("severity", "v.severity = %(severity)s"),
    ("status", "v.analyst_status = %(status)s"),
    ("rule", "v.rule_id = %(rule)s"),
    ("agent", """EXISTS (SELECT 1 FROM alerts a WHERE a.tenant_id = v.tenant_id
                 AND a.alert_id = v.alert_id AND a.agent_name = %(agent)s)"""),
    ("technique", "v.attack @> %(technique)s"),
    ("since", "v.created_at >= %(since)s"),
    ("until", "v.created_at < %(until)s"),
    ("search", "to_tsvector('english', v.summary) "
               "@@ websearch_to_tsquery('english', %(search)s)"),
)


def queue_sql(tenant_id: str, flt: QueueFilter, limit: int) -> tuple[str, dict[str, Any]]:
    where = ["v.tenant_id = %(tenant)s"]
    params: dict[str, Any] = {"tenant": tenant_id, "limit": limit}
    for name, condition in _CONDITIONS:
        value = getattr(flt, name)
        if value:
            where.append(condition)
            params[name] = Jsonb([{"id": value}]) if name == "technique" else value
    if flt.after:
        where.append("(v.created_at, v.id) < (%(after_ts)s, %(after_id)s)")
        params["after_ts"], params["after_id"] = flt.after
    sql = (f"SELECT {_QUEUE_COLUMNS} FROM verdicts v WHERE {' AND '.join(where)} "
           "ORDER BY v.created_at DESC, v.id DESC LIMIT %(limit)s")
    return sql, params


def searched_queue_sql(flt: QueueFilter, limit: int) -> tuple[str, dict[str, Any]]:
    """A page that searches (full text or ATT&CK) or pivots on a fact goes through
    console_queue_ids: row-level security keeps @@, @> and ->> out of index conditions
    (they are not leakproof), so the ids
    are found by the owner's function and the rows read back under the policies."""
    filters = {key: value for key, value in (
        ("severity", flt.severity), ("status", flt.status), ("rule", flt.rule),
        ("agent", flt.agent), ("src_ip", flt.src_ip), ("dst_ip", flt.dst_ip),
        ("user", flt.user), ("host", flt.host), ("technique", flt.technique),
        ("search", flt.search),
        ("since", flt.since.isoformat() if flt.since else None),
        ("until", flt.until.isoformat() if flt.until else None)) if value}
    after_ts, after_id = flt.after if flt.after else (None, None)
    sql = (f"SELECT {_QUEUE_COLUMNS} FROM verdicts v WHERE v.id IN "
           "(SELECT console_queue_ids(%(filters)s, %(after_ts)s, %(after_id)s, %(limit)s)) "
           "ORDER BY v.created_at DESC, v.id DESC")
    return sql, {"filters": Jsonb(filters), "after_ts": after_ts, "after_id": after_id,
                 "limit": limit}


async def verdict_queue(conn: AsyncConnection, tenant_id: str, flt: QueueFilter,
                        limit: int) -> QueuePage:
    if flt.search or flt.technique or flt.src_ip or flt.dst_ip or flt.user or flt.host:
        sql, params = searched_queue_sql(flt, limit + 1)
    else:
        sql, params = queue_sql(tenant_id, flt, limit + 1)
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        rows = await cur.fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = encode_cursor(rows[-1]["created_at"], rows[-1]["id"]) if more else None
    return QueuePage(rows, cursor)


async def newest_id(conn: AsyncConnection) -> int:
    """For live updates: the page polls this and reloads when it grows."""
    cur = await conn.execute("SELECT id FROM verdicts "
                             "WHERE tenant_id = current_setting('app.tenant_id') "
                             "ORDER BY created_at DESC, id DESC LIMIT 1")
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


# ---- one verdict ----------------------------------------------------------------------

async def verdict_detail(conn: AsyncConnection, verdict_id: int) -> dict[str, Any] | None:
    """The verdict, its raw alert, its cited passages and its feedback; None when the
    row does not exist or belongs to another tenant (the policies hide it)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT v.*, a.normalized AS alert, a.agent_name, a.raw AS original
               FROM verdicts v LEFT JOIN alerts a
                 ON a.tenant_id = v.tenant_id AND a.alert_id = v.alert_id
               WHERE v.id = %s""", (verdict_id,))
        row = await cur.fetchone()
        if row is None:
            return None
        row.pop("embedding", None)
        await cur.execute(
            """SELECT chunk_id, runbook, title, heading, content FROM runbook_chunks
               WHERE chunk_id = ANY(%s)""", (list(row["cited_chunks"] or []),))
        row["passages"] = await cur.fetchall()
        await cur.execute(
            """SELECT user_email, action, old_value, new_value, note, created_at
               FROM feedback WHERE verdict_id = %s ORDER BY created_at DESC, id DESC""",
            (verdict_id,))
        row["feedback"] = await cur.fetchall()
        similar = [r.removeprefix("verdict:") for r in row.get("retrieval_ids") or []
                   if r.startswith("verdict:")]
        await cur.execute(
            """SELECT id, alert_id, rule_id, severity, analyst_status, summary
               FROM verdicts WHERE tenant_id = %s AND alert_id = ANY(%s) LIMIT 10""",
            (row["tenant_id"], similar))
        row["similar"] = await cur.fetchall()
    return row


async def related_alerts(conn: AsyncConnection, verdict_id: int, window_s: float,
                         per_lane: int = 50) -> list[dict[str, Any]]:
    """Verdicts sharing this one's agent, source address or user within ±window_s, one
    row per (verdict, lane), oldest first; ids from console_related_ids (migration 0010),
    rows read under the policies."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT r.via, v.id, v.alert_id, v.severity, v.summary, v.created_at,
                      v.facts->>'agent' AS agent, v.facts->>'src_ip' AS src_ip,
                      v.facts->>'user' AS "user"
               FROM console_related_ids(%s, %s, %s) r JOIN verdicts v ON v.id = r.id
               ORDER BY v.created_at, v.id, r.via""", (verdict_id, window_s, per_lane))
        return await cur.fetchall()

