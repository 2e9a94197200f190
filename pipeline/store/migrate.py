"""Apply schemas/migrations/*.sql in order, once each, tracked in schema_migrations."""

from __future__ import annotations

from importlib import resources

import psycopg

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
