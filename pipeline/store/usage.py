"""llm_usage_events: written in batches off the request path (router/usage.py).

A batch is one transaction: the new reservation rows COPYed straight into the table, the
rows that settle (a final event settles its row in place: the key is (id, created_at), so
the row stays in its monthly partition) COPYed into a per-session staging table and
upserted from it in one statement, one delete of rows reserved for requests that reached
no replica, and one update of the running counts of rows still in flight
(router/progress.py). COPY rather than a multi-row INSERT of arrays: the binary COPY
costs the client a fifteenth of the CPU and the server half the time per row
(bench/usage_events.py). A reservation whose row already exists (a retry after a commit
whose answer was lost, or its final event written first) makes the direct COPY fail: the
batch is then written again with every row through the upsert, which never lets a
reservation overwrite a row. A settlement is a HOT update (no index refers to a column it
changes, and pages keep room for the new version: migration 0013): a third of the
database's CPU per row of an update that adds an entry to every index.
"""

from __future__ import annotations

from collections.abc import Sequence

from psycopg import AsyncConnection, errors
from psycopg_pool import AsyncConnectionPool

from pipeline.router.usage import UsageBatch
from schemas.usage import ABANDONED, IN_FLIGHT, UsageEvent

_COLUMNS = ("id", "tenant_id", "model_name", "pool", "replica", "priority", "request_id",
            "alert_id", "input_tokens", "output_tokens", "total_tokens", "ttft_ms",
            "total_latency_ms", "status_code", "error_kind", "created_at")
_TYPES = ("uuid", "text", "text", "text", "text", "text", "text", "text", "int4", "int4",
          "int4", "int4", "int4", "int4", "text", "timestamptz")
# What a final event settles; the rest was right at reservation.
# model_name too: a request retried on another model version (router/rollout.py) is
# settled with the version that served it.
_SETTLED = ("model_name", "replica", "input_tokens", "output_tokens", "total_tokens", "ttft_ms",
            "total_latency_ms", "status_code", "error_kind")

# Rows to upsert go through this staging table (one per session, emptied at each commit).
_STAGE = ("CREATE TEMP TABLE IF NOT EXISTS llm_usage_stage "
          "(LIKE llm_usage_events) ON COMMIT DELETE ROWS")
_COPY_COLUMNS = f"({', '.join(_COLUMNS)}) FROM STDIN (FORMAT BINARY)"

_UPSERT = (
    f"INSERT INTO llm_usage_events ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join(_COLUMNS)} FROM llm_usage_stage "
    "ON CONFLICT (id, created_at) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in _SETTLED)
    # A reservation never overwrites a row (its request's final event may be written).
    + f" WHERE EXCLUDED.error_kind IS DISTINCT FROM '{IN_FLIGHT}'")

_DELETE = """DELETE FROM llm_usage_events e
             USING unnest(%s::uuid[], %s::timestamptz[]) AS d(id, created_at)
             WHERE e.id = d.id AND e.created_at = d.created_at"""

# Running counts of requests under way: only a row still in flight (a late progress write
# never undoes its final event), output never lowered (two writers' rounds may cross).
_PROGRESS = f"""UPDATE llm_usage_events e
SET input_tokens = p.input_tokens,
    output_tokens = GREATEST(e.output_tokens, p.output_tokens),
    total_tokens = p.input_tokens + GREATEST(e.output_tokens, p.output_tokens)
FROM unnest(%s::uuid[], %s::timestamptz[], %s::int4[], %s::int4[])
     AS p(id, created_at, input_tokens, output_tokens)
WHERE e.id = p.id AND e.created_at = p.created_at AND e.error_kind = '{IN_FLIGHT}'"""

# Rows whose process died mid-call, billed as vLLM counts (router/progress.py): the prompt
# once the first token was out, and the output streamed up to the last progress write
# (the last ~1.5 s before the kill are not in it). A row that shows no output was killed
# before its first token as far as anyone knows: vLLM did not count its prompt, nor do we.
# No index finds rows in flight (one would make every settlement a non-HOT update:
# schemas/migrations/0013_usage_hot_settle.sql): the search starts where earlier starts
# left off (their mark), an hour earlier for reservations written late (while the
# database was slow), and the BRIN index on created_at skips the older pages.
_SETTLE_ABANDONED = f"""
UPDATE llm_usage_events SET error_kind = '{ABANDONED}',
    input_tokens = CASE WHEN output_tokens > 0 THEN input_tokens ELSE 0 END,
    total_tokens = CASE WHEN output_tokens > 0 THEN input_tokens + output_tokens ELSE 0 END
WHERE error_kind = '{IN_FLIGHT}' AND created_at < now() - make_interval(secs => %(older)s)
  AND created_at >= COALESCE((SELECT settled_before - interval '1 hour'
                              FROM llm_usage_abandoned_mark), '-infinity')"""
_MARK_ABANDONED = """
INSERT INTO llm_usage_abandoned_mark (settled_before)
VALUES (now() - make_interval(secs => %(older)s))
ON CONFLICT (singleton) DO UPDATE SET settled_before = GREATEST(
    llm_usage_abandoned_mark.settled_before, EXCLUDED.settled_before)"""


def _row(e: UsageEvent) -> tuple[object, ...]:
    return (e.id, e.tenant_id, e.model_name, e.pool, e.replica, e.priority, e.request_id,
            e.alert_id, e.input_tokens, e.output_tokens, e.total_tokens, e.ttft_ms,
            e.total_latency_ms, e.status_code, e.error_kind, e.created_at)


async def copy_usage_events(conn: AsyncConnection, events: Sequence[UsageEvent]) -> int:
    """Insert settled rows in bulk (COPY); for loading and tests."""
    async with conn.cursor() as cur, cur.copy(
        f"COPY llm_usage_events ({', '.join(_COLUMNS)}) FROM STDIN"
    ) as copy:
        for e in events:
            await copy.write_row(_row(e))
    return len(events)


async def _copy_rows(conn: AsyncConnection, table: str,
                     events: Sequence[UsageEvent]) -> None:
    async with conn.cursor() as cur, cur.copy(f"COPY {table} {_COPY_COLUMNS}") as copy:
        copy.set_types(list(_TYPES))
        for e in events:
            await copy.write_row(_row(e))


def _is_reservation(e: UsageEvent) -> bool:
    return e.status_code is None and e.error_kind == IN_FLIGHT


async def write_usage_batch(conn: AsyncConnection, batch: UsageBatch, *,
                            reservations_direct: bool = True) -> None:
    """Call inside a transaction. `reservations_direct`: new reservation rows are COPYed
    straight into the table (fails with UniqueViolation if one exists already)."""
    if batch.only_reservations:
        # Reservations guard against a crash of *this* process, not of the database:
        # no need to wait for the WAL flush (the request waits for this commit). Per
        # transaction, not per connection: the pool may be shared with writes that must
        # be durable (pipeline/runtime.py shares it). One round trip per batch of
        # hundreds of rows: ~1 µs of the writer's CPU per event (bench/usage_events.py).
        await conn.execute("SET LOCAL synchronous_commit = off")
    direct = [e for e in batch.upserts if reservations_direct and _is_reservation(e)]
    staged = batch.upserts if not direct else [
        e for e in batch.upserts if not _is_reservation(e)]
    if direct:
        await _copy_rows(conn, "llm_usage_events", direct)
    if staged:
        await conn.execute(_STAGE)
        await _copy_rows(conn, "llm_usage_stage", staged)
        await conn.execute(_UPSERT)
    if batch.deletes:
        await conn.execute(_DELETE, ([e.id for e in batch.deletes],
                                     [e.created_at for e in batch.deletes]))
    if batch.progress:
        await conn.execute(_PROGRESS, ([e.id for e in batch.progress],
                                       [e.created_at for e in batch.progress],
                                       [e.input_tokens for e in batch.progress],
                                       [e.output_tokens for e in batch.progress]))


async def settle_abandoned(conn: AsyncConnection, older_than_s: float) -> int:
    """Call inside a transaction: settles, then moves the mark up to what it settled."""
    cur = await conn.execute(_SETTLE_ABANDONED, {"older": older_than_s})
    await conn.execute(_MARK_ABANDONED, {"older": older_than_s})
    return cur.rowcount


class PostgresUsageStore:
    """The usage writer's store on a connection pool."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def write(self, batch: UsageBatch) -> None:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                await write_usage_batch(conn, batch)
        except errors.UniqueViolation:  # a reservation's row exists: all by the upsert
            async with self._pool.connection() as conn, conn.transaction():
                await write_usage_batch(conn, batch, reservations_direct=False)

    async def settle_abandoned(self, older_than_s: float) -> int:
        async with self._pool.connection() as conn, conn.transaction():
            return await settle_abandoned(conn, older_than_s)
