"""Tenants and console accounts: created and found on the owner's connection (sign-in
happens before the tenant is known), listed and changed by a tenant's admins under the
policies (`tenant_scope`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

# Not an argon2 hash: verify_password() refuses every password against it, so an account
# provisioned by OIDC can only sign in through its provider (until `users create` sets a
# password for it).
NO_PASSWORD = "!oidc-only"


@dataclass(frozen=True)
class User:
    id: int
    tenant_id: str
    email: str
    role: str
    password_hash: str



async def create_tenant(conn: AsyncConnection, tenant_id: str,
                        name: str | None = None) -> bool:
    cur = await conn.execute("INSERT INTO tenants (tenant_id, name) VALUES (%s, %s) "
                       "ON CONFLICT DO NOTHING", (tenant_id, name or tenant_id))
    return cur.rowcount == 1


async def create_user(conn: AsyncConnection, tenant_id: str, email: str, role: str,
                      password_hash: str) -> int:
    """Create (or, for an existing email, reset password and role of) a user."""
    cur = await conn.execute(
        """INSERT INTO console_users (tenant_id, email, role, password_hash)
           VALUES (%s, %s, %s, %s)
           ON CONFLICT (lower(email)) DO UPDATE
               SET role = EXCLUDED.role, password_hash = EXCLUDED.password_hash,
                   disabled_at = NULL
           WHERE console_users.tenant_id = EXCLUDED.tenant_id
           RETURNING id""", (tenant_id, email, role, password_hash))
    row = await cur.fetchone()
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



async def tenant_exists(conn: AsyncConnection, tenant_id: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM tenants WHERE tenant_id = %s", (tenant_id,))
    return await cur.fetchone() is not None


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



async def provision_analyst(conn: AsyncConnection, tenant_id: str, email: str) -> User | None:
    """Create an analyst of `tenant_id` without a password (OIDC sign-in); None when the
    email is taken (by any tenant: emails are unique across tenants)."""
    user_id = await add_tenant_user(conn, tenant_id, email, "analyst", NO_PASSWORD)
    return None if user_id is None else User(user_id, tenant_id, email, "analyst",
                                             NO_PASSWORD)
