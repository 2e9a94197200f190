"""The tenant's view of the database: one transaction under `SET LOCAL ROLE
secanalyst_console` with `app.tenant_id` set, so the row-level security policies of
migration 0006 filter every row in the database itself.

Accounts (tenants, users, sessions) are read on the owner's connection instead: sign-in
happens before the tenant is known."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

CONSOLE_ROLE = "secanalyst_console"


class ConsoleRoleMissing(RuntimeError):
    """The database has no usable secanalyst_console role (see migration 0006)."""


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
