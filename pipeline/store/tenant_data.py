"""Everything held about one tenant, found in the catalog rather than listed by hand, so a
table added by a later migration is exported and purged without a change here.

A "tenant table" is any ordinary or partitioned (not partition-child) table of the public
schema with a `tenant_id` column. Rows of tables without one (console sessions) go with
their parent rows through ON DELETE CASCADE. Secrets are never exported: columns holding
hashes of keys, passwords or tokens are left out of every row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

# Columns whose values are credentials (hashes included): never leave the database.
SECRET_COLUMNS = frozenset({"key_hash", "password_hash", "token_hash", "secret_hash",
                            "client_secret"})


@dataclass(frozen=True)
class TenantTable:
    name: str
    references: frozenset[str]  # other tenant tables this one has foreign keys to


def tenant_tables(conn: psycopg.Connection[Any]) -> list[TenantTable]:
    """Tenant tables, children before the tables they reference (a safe delete order)."""
    rows = conn.execute("""
        SELECT c.relname,
               coalesce(array_agg(DISTINCT r.relname) FILTER (WHERE r.relname IS NOT NULL),
                        '{}')
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
        JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id'
                            AND NOT a.attisdropped
        LEFT JOIN pg_constraint f ON f.conrelid = c.oid AND f.contype = 'f'
        LEFT JOIN pg_class r ON r.oid = f.confrelid AND r.oid <> c.oid
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
        GROUP BY c.relname""").fetchall()
    tables = {name: frozenset(refs) for name, refs in rows}
    ordered: list[TenantTable] = []
    placed: set[str] = set()
    # Repeatedly place every table that no unplaced table references.
    while len(placed) < len(tables):
        ready = sorted(t for t in tables if t not in placed and not any(
            t in refs for other, refs in tables.items() if other not in placed and other != t))
        if not ready:  # a reference cycle: delete order cannot be derived
            raise RuntimeError(f"foreign-key cycle among {sorted(set(tables) - placed)}")
        for name in ready:
            placed.add(name)
            ordered.append(TenantTable(name, tables[name] & set(tables)))
    return ordered


def export_rows(conn: psycopg.Connection[Any], tenant_id: str) -> Iterator[dict[str, Any]]:
    """Every row of the tenant as `{"table": ..., "row": {...}}`, secrets left out."""
    for table in sorted(tenant_tables(conn), key=lambda t: t.name):
        query = sql.SQL("SELECT to_jsonb(t) FROM {} t WHERE tenant_id = %s").format(
            sql.Identifier(table.name))
        with conn.cursor(name=f"export_{table.name}") as cur:  # server-side: any size
            cur.execute(query, (tenant_id,))
            for (row,) in cur:
                yield {"table": table.name,
                       "row": {k: v for k, v in row.items() if k not in SECRET_COLUMNS}}


def write_export(conn: psycopg.Connection[Any], tenant_id: str, out: Any) -> dict[str, int]:
    """Write the tenant's rows as JSON lines to `out`; rows per table."""
    counts: dict[str, int] = {}
    for item in export_rows(conn, tenant_id):
        out.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")
        counts[item["table"]] = counts.get(item["table"], 0) + 1
    return counts


def count_rows(conn: psycopg.Connection[Any], tenant_id: str) -> dict[str, int]:
    """Rows of the tenant per tenant table (0 included)."""
    return {t.name: conn.execute(
        sql.SQL("SELECT count(*) FROM {} WHERE tenant_id = %s").format(
            sql.Identifier(t.name)), (tenant_id,)).fetchone()[0]  # type: ignore[index]
        for t in tenant_tables(conn)}


def purge(conn: psycopg.Connection[Any], tenant_id: str) -> dict[str, int]:
    """Delete every row of the tenant in one transaction; rows deleted per table."""
    deleted: dict[str, int] = {}
    with conn.transaction():
        for table in tenant_tables(conn):
            cur = conn.execute(sql.SQL("DELETE FROM {} WHERE tenant_id = %s").format(
                sql.Identifier(table.name)), (tenant_id,))
            deleted[table.name] = cur.rowcount
    return deleted
