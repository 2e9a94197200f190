"""Apply schemas/migrations/*.sql in order, once each, tracked in schema_migrations."""

from __future__ import annotations

from collections.abc import Collection
from importlib import resources

import psycopg
from psycopg_pool import AsyncConnectionPool

# What to tell an operator whose database lacks migrations this code needs.
MIGRATE_HINT = "the database is behind this code: run `secanalyst db migrate`"

_TRACKING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    TEXT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""


def available_migrations() -> list[tuple[str, str]]:
    folder = resources.files("schemas").joinpath("migrations")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")),
                   key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text(encoding="utf-8")) for f in files]


def migrate(database_url: str) -> list[str]:
    """Apply what is missing; return the versions applied now. Safe to run concurrently:
    an advisory lock serialises migrators."""
    applied_now: list[str] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(7426001)")
        try:
            conn.execute(_TRACKING)
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, sql in available_migrations():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql.encode())  # our own trusted files, not user input
                    conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)",
                                 (version,))
                applied_now.append(version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(7426001)")
    return applied_now


def missing_versions(applied: Collection[str]) -> list[str]:
    """The versions of schemas/migrations not in `applied`, in order."""
    return [version for version, _ in available_migrations() if version not in applied]


async def pending_migrations(pool: AsyncConnectionPool) -> list[str]:
    """The versions not applied to the pool's database (every one on a database never
    migrated)."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        row = await cur.fetchone()
        applied: set[str] = set()
        if row is not None and row[0]:
            cur = await conn.execute("SELECT version FROM schema_migrations")
            applied = {version for (version,) in await cur.fetchall()}
    return missing_versions(applied)
