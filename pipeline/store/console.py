"""The review console's queries.

Two kinds of connection:
- accounts (tenants, users, sessions) are read as the owner: sign-in happens before the
  tenant is known;
- everything a tenant sees runs inside `tenant_scope`: one transaction under
  `SET LOCAL ROLE secanalyst_console` with `app.tenant_id` set, so the row-level security
  policies of migration 0006 filter every row in the database itself.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

CONSOLE_ROLE = "secanalyst_console"
ANALYST_STATUSES = ("new", "confirmed", "corrected", "false_positive")


class ConsoleRoleMissing(RuntimeError):
    """The database has no usable secanalyst_console role (see migration 0006)."""


# ---- accounts (owner connection) -------------------------------------------------------

@dataclass(frozen=True)
class User:
    id: int
    tenant_id: str
    email: str
    role: str
    password_hash: str


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def create_tenant(conn: psycopg.Connection, tenant_id: str, name: str | None = None) -> bool:
    cur = conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, %s) "
                       "ON CONFLICT DO NOTHING", (tenant_id, name or tenant_id))
    return cur.rowcount == 1


def create_user(conn: psycopg.Connection, tenant_id: str, email: str, role: str,
                password_hash: str) -> int:
    """Create (or, for an existing email, reset password and role of) a user."""
    row = conn.execute(
        """INSERT INTO console_users (tenant_id, email, role, password_hash)
           VALUES (%s, %s, %s, %s)
           ON CONFLICT (lower(email)) DO UPDATE
               SET role = EXCLUDED.role, password_hash = EXCLUDED.password_hash,
                   disabled_at = NULL
           WHERE console_users.tenant_id = EXCLUDED.tenant_id
           RETURNING id""", (tenant_id, email, role, password_hash)).fetchone()
    if row is None:
        raise ValueError(f"{email} already belongs to another tenant")
    return int(row[0])


async def find_user(conn: AsyncConnection, email: str) -> User | None:
    cur = await conn.execute(
        """SELECT id, tenant_id, email, role, password_hash FROM console_users
           WHERE lower(email) = lower(%s) AND disabled_at IS NULL""", (email,))
    row = await cur.fetchone()
    return None if row is None else User(int(row[0]), row[1], row[2], row[3], row[4])


async def update_password_hash(conn: AsyncConnection, user_id: int, new_hash: str) -> None:
    await conn.execute("UPDATE console_users SET password_hash = %s WHERE id = %s",
                       (new_hash, user_id))


async def create_session(conn: AsyncConnection, user_id: int, ttl_s: float
                         ) -> tuple[str, str]:
    """A new session: (cookie token, CSRF token). Only the token's SHA-256 is stored."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    await conn.execute(
        """INSERT INTO console_sessions (token_hash, user_id, csrf_token, expires_at)
           VALUES (%s, %s, %s, %s)""",
        (hash_token(token), user_id, csrf, datetime.now(UTC) + timedelta(seconds=ttl_s)))
    await conn.execute("DELETE FROM console_sessions WHERE expires_at < now()")
    return token, csrf


async def find_session(conn: AsyncConnection, token: str) -> Session | None:
    cur = await conn.execute(
        """SELECT u.id, u.tenant_id, u.email, u.role, u.password_hash, s.csrf_token
           FROM console_sessions s JOIN console_users u ON u.id = s.user_id
           WHERE s.token_hash = %s AND s.expires_at > now() AND u.disabled_at IS NULL""",
        (hash_token(token),))
    row = await cur.fetchone()
    if row is None:
        return None
    return Session(User(int(row[0]), row[1], row[2], row[3], row[4]), row[5])


async def delete_session(conn: AsyncConnection, token: str) -> None:
    await conn.execute("DELETE FROM console_sessions WHERE token_hash = %s",
                       (hash_token(token),))


# ---- tenant scope ---------------------------------------------------------------------

@asynccontextmanager
async def tenant_scope(pool: AsyncConnectionPool, tenant_id: str
                       ) -> AsyncIterator[AsyncConnection]:
    """A transaction in which row-level security shows only `tenant_id`'s rows."""
    async with pool.connection() as conn, conn.transaction():
        try:
            await conn.execute(f"SET LOCAL ROLE {CONSOLE_ROLE}")
        except psycopg.errors.InsufficientPrivilege as exc:
            raise ConsoleRoleMissing(
                f"the database user cannot SET ROLE {CONSOLE_ROLE}: create the role and "
                f"GRANT {CONSOLE_ROLE} TO the console's user (migration 0006)") from exc
        await conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        yield conn


async def audit(conn: AsyncConnection, user: User, action: str, target: str | None,
                detail: dict[str, Any] | None = None) -> None:
    await conn.execute(
        """INSERT INTO audit_log (tenant_id, user_id, user_email, action, target, detail)
           VALUES (%s, %s, %s, %s, %s, %s)""",
        (user.tenant_id, user.id, user.email, action, target, Jsonb(detail or {})))


async def audit_entries(conn: AsyncConnection, limit: int = 100,
                        target: str | None = None) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT id, user_email, action, target, detail, created_at FROM audit_log
               WHERE (%(target)s::text IS NULL OR target = %(target)s::text)
               ORDER BY created_at DESC, id DESC LIMIT %(limit)s""",
            {"target": target, "limit": limit})
        return await cur.fetchall()


# ---- the queue ------------------------------------------------------------------------

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


def queue_sql(tenant_id: str, flt: QueueFilter, limit: int) -> tuple[str, dict[str, Any]]:
    where = ["v.tenant_id = %(tenant)s"]
    params: dict[str, Any] = {"tenant": tenant_id, "limit": limit}
    if flt.severity:
        where.append("v.severity = %(severity)s")
        params["severity"] = flt.severity
    if flt.status:
        where.append("v.analyst_status = %(status)s")
        params["status"] = flt.status
    if flt.rule:
        where.append("v.rule_id = %(rule)s")
        params["rule"] = flt.rule
    if flt.agent:
        where.append("""EXISTS (SELECT 1 FROM alerts a WHERE a.tenant_id = v.tenant_id
                        AND a.alert_id = v.alert_id AND a.agent_name = %(agent)s)""")
        params["agent"] = flt.agent
    if flt.technique:
        where.append("v.attack @> %(technique)s")
        params["technique"] = Jsonb([{"id": flt.technique}])
    if flt.since:
        where.append("v.created_at >= %(since)s")
        params["since"] = flt.since
    if flt.until:
        where.append("v.created_at < %(until)s")
        params["until"] = flt.until
    if flt.search:
        where.append("to_tsvector('english', v.summary) "
                     "@@ websearch_to_tsquery('english', %(search)s)")
        params["search"] = flt.search
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


# ---- feedback -------------------------------------------------------------------------

FEEDBACK_ACTIONS = ("confirm", "severity", "false_positive", "attack", "note")


class FeedbackRejected(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def apply_feedback(conn: AsyncConnection, user: User, verdict_id: int, action: str,
                         *, severity: str | None = None,
                         attack: Sequence[dict[str, Any]] | None = None,
                         note: str | None = None) -> bool:
    """Record one analyst judgement and update the verdict; False when the verdict is not
    visible to this tenant. Writes feedback + audit_log in the caller's transaction."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT severity, attack, analyst_status FROM verdicts "
                          "WHERE id = %s FOR UPDATE", (verdict_id,))
        current = await cur.fetchone()
    if current is None:
        return False
    old: Any
    new: Any
    if action == "confirm":
        old, new = current["analyst_status"], "confirmed"
        await conn.execute("UPDATE verdicts SET analyst_status = 'confirmed' WHERE id = %s",
                           (verdict_id,))
    elif action == "false_positive":
        old, new = current["analyst_status"], "false_positive"
        await conn.execute("UPDATE verdicts SET analyst_status = 'false_positive' "
                           "WHERE id = %s", (verdict_id,))
    elif action == "severity":
        if severity is None:
            raise FeedbackRejected("severity: required")
        old, new = current["severity"], severity
        await conn.execute(
            """UPDATE verdicts SET severity = %s, severity_source = 'analyst',
                   analyst_status = 'corrected' WHERE id = %s""", (severity, verdict_id))
    elif action == "attack":
        if attack is None:
            raise FeedbackRejected("attack: required")
        old, new = current["attack"], list(attack)
        await conn.execute("UPDATE verdicts SET attack = %s, analyst_status = 'corrected' "
                           "WHERE id = %s", (Jsonb(new), verdict_id))
    elif action == "note":
        if not note:
            raise FeedbackRejected("note: required")
        old, new = None, None
    else:
        raise FeedbackRejected(f"action: one of {', '.join(FEEDBACK_ACTIONS)}")
    await conn.execute(
        """INSERT INTO feedback (tenant_id, verdict_id, user_id, user_email, action,
                                 old_value, new_value, note)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (user.tenant_id, verdict_id, user.id, user.email, action,
         None if old is None else Jsonb(old), None if new is None else Jsonb(new), note))
    await audit(conn, user, f"verdict.{action}", f"verdict:{verdict_id}",
                {"old": old, "new": new, "note": note})
    return True


# ---- usage (GROUP BY in SQL) ----------------------------------------------------------

_PRICES = """prices (model_name, input_per_million, output_per_million) AS (
    SELECT * FROM unnest(%(models)s::text[], %(inputs)s::float8[], %(outputs)s::float8[]))"""

_DAILY = f"""
WITH {_PRICES}
SELECT date_trunc('day', e.created_at AT TIME ZONE 'UTC')::date AS day, e.tenant_id,
       e.model_name,
       sum(e.input_tokens + e.output_tokens) FILTER (WHERE e.status_code = 200) AS tokens,
       sum((e.input_tokens * COALESCE(p.input_per_million, d.input_per_million)
            + e.output_tokens * COALESCE(p.output_per_million, d.output_per_million)) / 1e6)
           FILTER (WHERE e.status_code = 200) AS cost,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY e.ttft_ms)
           FILTER (WHERE e.status_code = 200) AS ttft_p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY e.ttft_ms)
           FILTER (WHERE e.status_code = 200) AS ttft_p95_ms,
       count(*) AS requests
FROM llm_usage_events e
LEFT JOIN prices p ON p.model_name = e.model_name
CROSS JOIN (SELECT * FROM prices WHERE model_name = 'default') d
WHERE e.created_at >= %(since)s AND e.created_at < %(until)s
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""

_REJECTIONS = """
SELECT COALESCE(error_kind, 'http_' || status_code::text, 'unknown') AS reason,
       count(*) AS requests
FROM llm_usage_events
WHERE created_at >= %(since)s AND created_at < %(until)s
  AND status_code IS DISTINCT FROM 200
GROUP BY 1 ORDER BY 2 DESC"""

_TOP_RULES = """
SELECT v.rule_id, sum(e.input_tokens + e.output_tokens) AS tokens, count(*) AS requests
FROM llm_usage_events e
JOIN verdicts v ON v.tenant_id = e.tenant_id AND v.alert_id = e.alert_id
WHERE e.created_at >= %(since)s AND e.created_at < %(until)s AND e.status_code = 200
GROUP BY v.rule_id ORDER BY tokens DESC LIMIT 10"""


async def usage_overview(conn: AsyncConnection, *, since: datetime, until: datetime,
                         pricing: dict[str, tuple[float, float]],
                         all_tenants: bool = False) -> dict[str, Any]:
    """Daily tokens/cost/TTFT per tenant and model, rejections by reason, top rules (of
    the signed-in tenant's verdicts). `all_tenants` widens the usage rows to every tenant
    (the policy on llm_usage_events allows it for the platform's admins only)."""
    if all_tenants:
        await conn.execute("SELECT set_config('app.usage_all_tenants', 'on', true)")
    names = list(pricing)
    params = {"models": names, "inputs": [pricing[n][0] for n in names],
              "outputs": [pricing[n][1] for n in names], "since": since, "until": until}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_DAILY, params)
        daily = await cur.fetchall()
        await cur.execute(_REJECTIONS, params)
        rejections = await cur.fetchall()
        await cur.execute(_TOP_RULES, params)
        top_rules = await cur.fetchall()
    for row in daily:
        row["tokens"] = int(row["tokens"] or 0)
        row["cost"] = float(row["cost"] or 0.0)
    return {"daily": daily, "rejections": rejections, "top_rules": top_rules}


# ---- accounts of the tenant (admins, under the policies) -------------------------------

async def tenant_users(conn: AsyncConnection) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT id, email, role, disabled_at, created_at "
                          "FROM console_users ORDER BY lower(email)")
        return await cur.fetchall()


async def add_tenant_user(conn: AsyncConnection, tenant_id: str, email: str, role: str,
                          password_hash: str) -> int | None:
    """None when the email is taken (emails are unique across tenants)."""
    cur = await conn.execute(
        """INSERT INTO console_users (tenant_id, email, role, password_hash)
           VALUES (%s, %s, %s, %s) ON CONFLICT (lower(email)) DO NOTHING RETURNING id""",
        (tenant_id, email, role, password_hash))
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def set_user_disabled(conn: AsyncConnection, user_id: int, disabled: bool) -> bool:
    cur = await conn.execute(
        "UPDATE console_users SET disabled_at = CASE WHEN %s THEN now() END WHERE id = %s",
        (disabled, user_id))
    return cur.rowcount == 1


async def recent_failed_sign_ins(conn: AsyncConnection, user_id: int, window_s: float) -> int:
    """Failed sign-ins of this account in the window (owner connection)."""
    cur = await conn.execute(
        """SELECT count(*) FROM audit_log WHERE user_id = %s
           AND action = 'auth.sign_in_failed'
           AND created_at > now() - make_interval(secs => %s)""", (user_id, window_s))
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


# ---- the tenant's gateway API keys (admins, under the policies) -------------------------

async def tenant_api_keys(conn: AsyncConnection) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT key_id, name, created_at, revoked_at FROM api_keys "
                          "ORDER BY created_at DESC")
        return await cur.fetchall()


async def create_api_key(conn: AsyncConnection, pepper: bytes, tenant_id: str,
                         name: str) -> tuple[str, str]:
    """(key_id, full key); only the key's HMAC is stored (pipeline/store/apikeys.py)."""
    from pipeline.store.apikeys import hash_key, new_key

    key_id, key = new_key()
    await conn.execute("INSERT INTO api_keys (key_id, tenant_id, name, key_hash) "
                       "VALUES (%s, %s, %s, %s)",
                       (key_id, tenant_id, name, hash_key(pepper, key)))
    return key_id, key


async def revoke_api_key(conn: AsyncConnection, key_id: str) -> bool:
    cur = await conn.execute("UPDATE api_keys SET revoked_at = now() "
                             "WHERE key_id = %s AND revoked_at IS NULL", (key_id,))
    return cur.rowcount == 1
