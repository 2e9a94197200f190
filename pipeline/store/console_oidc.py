"""Accounts and audit entries of OIDC sign-in (owner connection: sign-in happens before
the tenant is known, like the password sign-in's account look-up)."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from pipeline.store.console import User

# Not an argon2 hash: verify_password() refuses every password against it, so an account
# provisioned by OIDC can only sign in through its provider (until `users create` sets a
# password for it).
NO_PASSWORD = "!oidc-only"


async def tenant_exists(conn: AsyncConnection, tenant_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM tenants WHERE tenant_id = %s", (tenant_id,))
    return await cur.fetchone() is not None


async def provision_analyst(conn: AsyncConnection, tenant_id: str, email: str) -> User | None:
    """Create an analyst of `tenant_id` without a password; None when the email is taken
    (by any tenant: emails are unique across tenants)."""
    cur = await conn.execute(
        """INSERT INTO console_users (tenant_id, email, role, password_hash)
           VALUES (%s, %s, 'analyst', %s)
           ON CONFLICT (lower(email)) DO NOTHING
           RETURNING id""", (tenant_id, email, NO_PASSWORD))
    row = await cur.fetchone()
    return None if row is None else User(int(row[0]), tenant_id, email, "analyst",
                                         NO_PASSWORD)


async def audit_event(conn: AsyncConnection, tenant_id: str, user: User | None,
                      email: str | None, action: str, target: str | None,
                      detail: dict[str, Any]) -> None:
    """An audit row that may have no account behind it (a refused sign-in)."""
    await conn.execute(
        """INSERT INTO audit_log (tenant_id, user_id, user_email, action, target, detail)
           VALUES (%s, %s, %s, %s, %s, %s)""",
        (tenant_id, user.id if user else None, user.email if user else email, action,
         target, Jsonb(detail)))
