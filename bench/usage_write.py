"""What metering every dispatched request costs the usage write path (issue #10, item 6).

N simulated LLM requests, C at a time, through the real usage writer on a private
PostgreSQL: each "request" takes 20-200 ms at the "replica", then records its final event.
Two modes:

- `final`: the final event only (what the writer did before: one row per request);
- `reserved`: a reservation row written and awaited before the request is "sent", then the
  final event settling it in place (what the router does now).

Reported per mode: rows written per request, database time per request (the writer's
write calls), and for `reserved` the wait a request pays before it is sent (p50/p95).

Run: .venv/bin/python -m bench.usage_write [--requests 4000] [--concurrency 32] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from bench.record import record
from pipeline.config import DatabaseSettings, Settings
from pipeline.devstack.postgres import EmbeddedPostgres
from pipeline.router.usage import BatchingUsageWriter, UsageBatch
from pipeline.store.database import open_pool
from pipeline.store.migrate import migrate
from pipeline.store.usage import PostgresUsageStore
from schemas.usage import IN_FLIGHT, UsageEvent
from tests.servers import free_port

COMMAND = ".venv/bin/python -m bench.usage_write"


class TimedStore:
    """The real store, with the time spent in its writes summed."""

    def __init__(self, inner: PostgresUsageStore) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.batches = 0

    async def write(self, batch: UsageBatch) -> None:
        started = time.perf_counter()
        await self.inner.write(batch)
        self.seconds += time.perf_counter() - started
        self.batches += 1

    async def settle_abandoned(self, older_than_s: float) -> int:
        return await self.inner.settle_abandoned(older_than_s)


async def run_mode(settings: Settings, mode: str, requests: int,
                   concurrency: int) -> dict[str, float]:
    pool = await open_pool(settings)
    store = TimedStore(PostgresUsageStore(pool))
    writer = BatchingUsageWriter(store)
    writer.start()
    waits: list[float] = []
    rng = random.Random(1)
    gate = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        async with gate:
            event = UsageEvent(tenant_id=f"bench-{mode}", model_name="m", pool="default",
                               replica="r", request_id=uuid.uuid4().hex, input_tokens=500,
                               output_tokens=0, status_code=None, error_kind=IN_FLIGHT)
            if mode == "reserved":
                started = time.perf_counter()
                await writer.reserve(event)
                waits.append(time.perf_counter() - started)
            await asyncio.sleep(rng.uniform(0.02, 0.2))  # the replica at work
            writer.record(replace(event, status_code=200, error_kind=None,
                                  output_tokens=80))

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(requests)))
    await writer.close()
    elapsed = time.perf_counter() - started
    await pool.close()
    result = {"db_ms_per_request": 1000 * store.seconds / requests,
              "batches": store.batches, "elapsed_s": elapsed}
    if waits:
        waits.sort()
        result["reserve_wait_p50_ms"] = 1000 * statistics.median(waits)
        result["reserve_wait_p95_ms"] = 1000 * waits[int(0.95 * (len(waits) - 1))]
    return result


async def main(args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="secanalyst-usage-bench-"))
    postgres = EmbeddedPostgres(state_dir=state, port=free_port())
    postgres.start()
    try:
        settings = Settings(state_dir=state,
                            database=DatabaseSettings(url=postgres.address()))  # type: ignore[arg-type]
        migrate(settings.database_url)
        results = {mode: await run_mode(settings, mode, args.requests, args.concurrency)
                   for mode in ("final", "reserved")}
    finally:
        postgres.stop()
        shutil.rmtree(state, ignore_errors=True)
    for mode, figures in results.items():
        print(mode, {k: round(v, 3) for k, v in figures.items()})
    if not args.no_record:
        reserved = results["reserved"]
        record("usage.reserve_wait_p95_ms", round(reserved["reserve_wait_p95_ms"], 2),
               goal="the wait a request pays for its reservation row before it is sent "
                    f"({args.concurrency} concurrent requests; final-only db time "
                    f"{results['final']['db_ms_per_request']:.3f} ms/request, with "
                    f"reservations {reserved['db_ms_per_request']:.3f} ms/request)",
               command=COMMAND)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-record", action="store_true")
    asyncio.run(main(parser.parse_args()))
