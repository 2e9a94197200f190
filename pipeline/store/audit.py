"""audit_log: who did what to which target, in the tenant's own log."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from pipeline.store.users import User


async def audit(conn: AsyncConnection, user: User, action: str, target: str | None,
                detail: dict[str, Any] | None = None) -> None:
    await audit_event(conn, user.tenant_id, user, None, action, target, detail or {})


async def audit_event(conn: AsyncConnection, tenant_id: str, user: User | None,
                      email: str | None, action: str, target: str | None,
                      detail: dict[str, Any]) -> None:
    """An audit row that may have no account behind it (a refused sign-in)."""
    await conn.execute(
        """INSERT INTO audit_log (tenant_id, user_id, user_email, action, target, detail)
           VALUES (%s, %s, %s, %s, %s, %s)""",
        (tenant_id, user.id if user else None, user.email if user else email, action,
         target, Jsonb(detail)))


async def audit_entries(conn: AsyncConnection, limit: int = 100,
                        target: str | None = None) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT id, user_email, action, target, detail, created_at FROM audit_log
               WHERE (%(target)s::text IS NULL OR target = %(target)s::text)
               ORDER BY created_at DESC, id DESC LIMIT %(limit)s""",
            {"target": target, "limit": limit})
        return await cur.fetchall()


async def recent_failed_sign_ins(conn: AsyncConnection, user_id: int, window_s: float) -> int:
    """Failed sign-ins of this account in the window (owner connection)."""
    cur = await conn.execute(
        """SELECT count(*) FROM audit_log WHERE user_id = %s
           AND action = 'auth.sign_in_failed'
           AND created_at > now() - make_interval(secs => %s)""", (user_id, window_s))
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])

