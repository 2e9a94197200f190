"""Sustained write rate of usage events (issue 15, "Usage events"), with no event lost.

Many concurrent simulated LLM requests drive the router's metering API directly (no
LLM): each request reserves its row (`UsageRecorder.reserve`, timed: the wait a request
pays before it is sent), "runs" 20–200 ms at a replica, then `UsageRecorder.finished`
settles the row in place — what the router does for a dispatched request, with its
in-flight progress rounds. Events are realistic in size (uuid ids, 32-hex request ids,
alert ids, replica URLs) across many tenants, against the shared PostgreSQL (tenants of
this run only, deleted at the end).

**What is counted:** one usage event = one request's row reserved *and* settled (two row
writes). `events/s` is the number of rows settled (committed with their final status) per
second over the steady phase, per writer process and summed over processes.

Phases (per process): `steady` (--seconds), then `slow`: PostgreSQL answers every write
of this run `--slow-delay-s` late (a `pg_sleep` inside the writer's transaction) for
--slow-seconds, so the buffer fills: new reservations wait (back-pressure) instead of
being dropped. At the end every started request must have exactly one settled row:
`lost` = started − settled rows in the table, `dropped` = the writer's own count.

**The driver's own cost** is in the writer process's CPU figure: the simulated clients'
loop, the replica's wait and the caller's `ChatRequest` (the gateway's work, not
metering's). It is kept lean and still one coroutine per client and one await per
request at the replica, as a router's request tasks are: requests ending in the same
5 ms share one timer, their random draws and `ChatRequest`s are made once per process
(16,384 of them, each with its own alert id). A py-spy profile of a writer process
(2026-12-02, 2 × 2,000) put ~20 % of its samples in the driver (its loop, the replica
wait, `Upstream`/`Call` objects), ~27 % in metering (`UsageRecorder`, the ids, the
writer's queues), ~33 % in the COPY writes and the rest in the event loop.

Concurrency bounds the rate (Little's law): a request holds its slot for its reservation
wait plus 20–200 ms "at the replica" (110 ms on average), so 2 × 1,000 requests at a time
can never settle more than ~18,000 rows/s, however fast the write path. The default
(2 × 2,000) leaves room above 20,000/s; the CPU per event says what the path costs.

Run: .venv/bin/python -m bench.usage_events [--seconds 30] [--concurrency 2000]
     [--processes 2] [--tenants 200] [--no-record]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench.record import record
from pipeline.collector import GEN0_THRESHOLD, settle_for_serving
from pipeline.config import DatabaseSettings, Settings
from pipeline.router.dispatch import Upstream
from pipeline.router.metering import Call, Meter, UsageRecorder
from pipeline.router.replicas import Replica
from pipeline.router.tokens import Message
from pipeline.router.types import ChatRequest
from pipeline.router.usage import BatchingUsageWriter, UsageBatch
from pipeline.store.database import open_pool
from pipeline.store.usage import PostgresUsageStore, write_usage_batch
from schemas.usage import IN_FLIGHT

COMMAND = ".venv/bin/python -m bench.usage_events"
DATABASE_URL = "postgresql://secanalyst@127.0.0.1:54329/secanalyst"


@dataclass
class Clock:
    """Rows settled per second, as the writer commits them."""

    settled_at: list[tuple[float, int]] = field(default_factory=list)
    # (rows, seconds) of each write, by kind: reservations only, or with final events
    writes: dict[str, list[tuple[int, float]]] = field(
        default_factory=lambda: {"reserve": [], "settle": []})


class BenchStore:
    """The real store; while `slow` is set, PostgreSQL answers each write late."""

    def __init__(self, inner: PostgresUsageStore, pool: Any, clock: Clock) -> None:
        self.inner = inner
        self.pool = pool
        self.clock = clock
        self.slow_delay_s = 0.0

    async def write(self, batch: UsageBatch) -> None:
        began = time.perf_counter()
        if self.slow_delay_s:
            async with self.pool.connection() as conn, conn.transaction():
                await conn.execute("SELECT pg_sleep(%s)", (self.slow_delay_s,))
                await write_usage_batch(conn, batch)
        else:
            await self.inner.write(batch)
        settled = sum(1 for e in batch.upserts if e.status_code is not None)
        kind = "reserve" if batch.only_reservations else "settle"
        self.clock.writes[kind].append((len(batch.upserts), time.perf_counter() - began))
        if settled:
            self.clock.settled_at.append((time.perf_counter(), settled))

    async def settle_abandoned(self, older_than_s: float) -> int:
        return 0  # other sessions' rows are not this bench's to settle


MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
REPLICAS = [Replica(url=f"http://10.0.{n}.17:8000/v1", pool="default") for n in range(4)]
MESSAGES: list[Message] = [{"role": "user", "content": "explain this alert"}]


def _request(tenant: str, n: int) -> ChatRequest:
    return ChatRequest(tenant_id=tenant, messages=MESSAGES, max_tokens=256,
                       alert_id=f"1733097600.{n:08d}")


def _call(request: ChatRequest, estimated: int) -> Call:
    call = Call(request=request)
    call.estimated = estimated
    call.pool = "default"
    return call


class ReplicaTime:
    """The simulated replicas' work: requests that end in the same 5 ms share one timer
    (a timer per request was a seventh of the bench process's CPU: the driver's cost,
    not metering's)."""

    SLOT_S = 0.005

    def __init__(self) -> None:
        self._due: dict[int, asyncio.Future[None]] = {}

    async def work(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        slot = int((loop.time() + seconds) / self.SLOT_S) + 1
        done = self._due.get(slot)
        if done is None:
            done = self._due[slot] = loop.create_future()
            loop.call_at(slot * self.SLOT_S, self._end, slot)
        await done

    def _end(self, slot: int) -> None:
        self._due.pop(slot).set_result(None)


REPLICA_TIME = ReplicaTime()


# (the caller's request, its prompt estimate, replica, seconds at the replica, output
# tokens, TTFT ms, latency ms): drawn once, then read in turn by every client from a
# place of its own (six draws per request were a twentieth of the bench process's CPU).
# The caller's `ChatRequest` (a frozen dataclass: 5 % of the process) is built once per
# draw too: the gateway builds it, not metering; 16,384 of them per process over the
# run's tenants, each with its own alert id.
Draw = tuple[ChatRequest, int, Replica, float, int, int, int]


def _draws(tenants: list[str], seed: int, n: int = 16_384) -> list[Draw]:
    rng = random.Random(seed)
    return [(_request(tenants[rng.randrange(len(tenants))], seed + i), 1050 + i % 400,
             REPLICAS[rng.randrange(len(REPLICAS))], rng.uniform(0.02, 0.2),
             rng.randint(40, 160), rng.randint(30, 400), rng.randint(200, 3000))
            for i in range(n)]


async def _requests(recorder: UsageRecorder, stop_at: float,
                    waits: list[float], counts: dict[str, int],
                    draws: list[Draw], seed: int) -> None:
    """One simulated client: requests one after another, each metered as the router
    meters it (row reserved before dispatch, settled by its final event)."""
    at = seed * 7919
    while time.perf_counter() < stop_at:
        request, estimated, replica, work_s, output, ttft, latency = draws[at % len(draws)]
        at += 1
        call = _call(request, estimated)
        counts["started"] += 1
        meter = Meter()
        started = time.perf_counter()
        await recorder.reserve(call, replica.url, meter)
        waits.append(time.perf_counter() - started)
        meter.attempt(replica.url)
        await REPLICA_TIME.work(work_s)  # the replica at work
        recorder.finished(call, replica, Upstream(
            text="", prompt_tokens=call.estimated, completion_tokens=output,
            ttft_ms=ttft, latency_ms=latency, finish_reason="stop"), meter)
        recorder.settled(meter)


def _p95_ms(waits: list[float]) -> float:
    if not waits:
        return 0.0
    ordered = sorted(waits)
    return 1000 * ordered[int(0.95 * (len(ordered) - 1))]


async def _phase(recorder: UsageRecorder, tenants: list[str], seconds: float,
                 concurrency: int, counts: dict[str, int], seed: int) -> list[float]:
    waits: list[float] = []
    draws = _draws(tenants, seed)
    stop_at = time.perf_counter() + seconds
    await asyncio.gather(*(_requests(recorder, stop_at, waits, counts, draws, i)
                           for i in range(concurrency)))
    return waits


def _write_figures(clock: Clock) -> dict[str, float]:
    """Mean rows per write and ms per write, by kind (where the time goes)."""
    out: dict[str, float] = {}
    for kind, writes in clock.writes.items():
        if writes:
            out[f"{kind}_rows_per_write"] = statistics.mean(r for r, _ in writes)
            out[f"{kind}_ms_per_write"] = 1000 * statistics.mean(s for _, s in writes)
    return out


def _rate(clock: Clock, start: float, end: float) -> float:
    rows = sum(n for at, n in clock.settled_at if start <= at < end)
    return rows / (end - start)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (from /proc: the server is on this host)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _server_cpu_s(pool: Any, app: str) -> float:
    """CPU seconds of this process's PostgreSQL backends so far."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT pid FROM pg_stat_activity "
                                 "WHERE application_name = %s", (app,))
        pids = [pid for (pid,) in await cur.fetchall()]
    return sum(_cpu_s(pid) for pid in pids if Path(f"/proc/{pid}").exists())


async def run_process(index: int, args: argparse.Namespace, run: str) -> dict[str, Any]:
    app = f"bench-ue-{run}-{index}"
    # Every connection opened at once and kept: their backends' CPU is read at the end.
    settings = Settings(database=DatabaseSettings(
        url=SecretStr(f"{DATABASE_URL}?application_name={app}"), pool_min_size=4,
        pool_max_size=4))
    pool = await open_pool(settings)
    clock = Clock()
    store = BenchStore(PostgresUsageStore(pool), pool, clock)
    writer = BatchingUsageWriter(store, max_pending=args.max_pending)
    writer.start()
    recorder = UsageRecorder(MODEL, writer)  # with the in-flight progress rounds
    tenants = [f"bench-ue-{run}-{t}" for t in range(args.tenants)]
    counts = {"started": 0}
    begin = time.perf_counter()
    cpu_client, cpu_server = time.process_time(), await _server_cpu_s(pool, app)
    steady = await _phase(recorder, tenants, args.seconds, args.concurrency, counts,
                          seed=index * 100_000)
    steady_end = time.perf_counter()
    cpu_client = time.process_time() - cpu_client
    cpu_server = await _server_cpu_s(pool, app) - cpu_server
    steady_events = counts["started"]
    max_depth_before = writer.max_depth
    store.slow_delay_s = args.slow_delay_s
    slow_start = time.perf_counter()
    slow = await _phase(recorder, tenants, args.slow_seconds, args.concurrency, counts,
                        seed=index * 100_000 + 50_000)
    store.slow_delay_s = 0.0
    await recorder.close()
    await writer.close()
    # Skip the ramp-up second: the steady rate is the rate once every request is running.
    result = {
        "events_per_s": _rate(clock, begin + 1.0, steady_end),
        "slow_events_per_s": _rate(clock, slow_start, time.perf_counter()),
        "reserve_wait_p50_ms": 1000 * statistics.median(steady) if steady else 0.0,
        "reserve_wait_p95_ms": _p95_ms(steady),
        "slow_reserve_wait_p95_ms": _p95_ms(slow),
        "started": counts["started"], "dropped": writer.dropped,
        "backpressure_waits": writer.backpressure_waits,
        "max_depth_steady": max_depth_before, "max_depth": writer.max_depth,
        "max_pending": args.max_pending,
        **_write_figures(clock),
        # CPU per request of the steady phase (this process's loop: driver + writer;
        # its PostgreSQL backends; WAL writer and checkpointer not included).
        "client_cpu_us_per_event": 1e6 * cpu_client / steady_events,
        "server_cpu_us_per_event": 1e6 * cpu_server / steady_events,
    }
    await pool.close()
    return result


def _child(index: int, args: argparse.Namespace, run: str,
           out: multiprocessing.Queue) -> None:
    # As a router process (gateway, explain stage) sets it at its start
    # (pipeline/collector.py); `--gc-threshold 700` measures Python's default.
    settle_for_serving(args.gc_threshold)
    out.put(asyncio.run(run_process(index, args, run)))


async def _count_and_clean(run: str) -> dict[str, int]:
    settings = Settings(database=DatabaseSettings(url=DATABASE_URL))  # type: ignore[arg-type]
    pool = await open_pool(settings)
    pattern = f"bench-ue-{run}-%"
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE status_code = 200), "
            f"count(*) FILTER (WHERE error_kind = '{IN_FLIGHT}') "
            "FROM llm_usage_events WHERE tenant_id LIKE %s", (pattern,))
        rows, settled, in_flight = await cur.fetchone()  # type: ignore[misc]
        await conn.execute("DELETE FROM llm_usage_events WHERE tenant_id LIKE %s",
                           (pattern,))
    await pool.close()
    return {"rows": rows, "settled_rows": settled, "in_flight_rows": in_flight}


def _load() -> str:
    out = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    return out.split("load average:")[-1].strip()


def main(args: argparse.Namespace) -> None:
    run = uuid.uuid4().hex[:8]
    load_before = _load()
    out: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_child, args=(i, args, run, out))
             for i in range(args.processes)]
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    load_after = _load()
    table = asyncio.run(_count_and_clean(run))
    started = sum(r["started"] for r in results)
    summary = {
        "events_per_s": sum(r["events_per_s"] for r in results),
        "slow_events_per_s": sum(r["slow_events_per_s"] for r in results),
        "reserve_wait_p95_ms": max(r["reserve_wait_p95_ms"] for r in results),
        "reserve_wait_p50_ms": max(r["reserve_wait_p50_ms"] for r in results),
        "slow_reserve_wait_p95_ms": max(r["slow_reserve_wait_p95_ms"] for r in results),
        "started": started, **table, "lost": started - table["settled_rows"],
        "dropped": sum(r["dropped"] for r in results),
        "backpressure_waits": sum(r["backpressure_waits"] for r in results),
        "max_depth": max(r["max_depth"] for r in results),
        "max_pending": args.max_pending,
        "client_cpu_us_per_event": statistics.mean(
            r["client_cpu_us_per_event"] for r in results),
        "server_cpu_us_per_event": statistics.mean(
            r["server_cpu_us_per_event"] for r in results),
        "load_before": load_before, "load_after": load_after,
    }
    for i, r in enumerate(results):
        print(f"process {i}:", {k: round(v, 2) if isinstance(v, float) else v
                                for k, v in r.items()})
    print("total:", {k: round(v, 2) if isinstance(v, float) else v
                     for k, v in summary.items()})
    if not args.no_record:
        _record(args, summary)


def _record(args: argparse.Namespace, s: dict[str, Any]) -> None:
    command = (f"{COMMAND} --seconds {args.seconds} --concurrency {args.concurrency} "
               f"--processes {args.processes} --tenants {args.tenants}"
               + (f" --gc-threshold {args.gc_threshold}"
                  if args.gc_threshold != GEN0_THRESHOLD else ""))
    record("usage.events_per_s", round(s["events_per_s"]),
           goal=f"≥ 20,000 usage events/s sustained, 0 lost (event = one request's row "
                f"reserved and settled; {args.processes} writer processes × "
                f"{args.concurrency} concurrent requests; lost {s['lost']}, dropped "
                f"{s['dropped']}; load {s['load_before']})", command=command)
    record("usage.reserve_wait_p95_ms", round(s["reserve_wait_p95_ms"], 2),
           goal="the wait a request pays for its reservation row before it is sent, at "
                "the sustained rate of usage.events_per_s", command=command)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--slow-seconds", type=float, default=10.0)
    parser.add_argument("--slow-delay-s", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--max-pending", type=int, default=5000)
    parser.add_argument("--gc-threshold", type=int, default=GEN0_THRESHOLD,
                        help="gen-0 GC threshold in the writer processes (default: the "
                             "router processes' own, pipeline/collector.py; 700: Python's)")
    parser.add_argument("--no-record", action="store_true")
    main(parser.parse_args())
