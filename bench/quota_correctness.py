"""Quota correctness under contention (issue #3): 200 concurrent requests from 4
processes through the Redis quota store, one tenant, a small tokens-per-minute limit.

Each of the 200 clients (50 asyncio tasks in each of 4 processes) loops for the run:
reserve 300-1,500 tokens; when refused, wait and try again (half the clients wait the
`retry_after` they were given, the other half are impatient and retry after at most
0.2-3 s, so that refunds are raced for all through the run); when admitted, "generate"
for 0.2-2 s and settle with 30-100 % of the reservation (the rest is refunded). Every
admission is recorded with Redis's timestamp, its reservation and its settled tokens.
Afterwards every 60-second interval that starts at an admission is summed: the settled
tokens in any minute must stay within the limit plus one request's reservation (goal:
within the limit itself).

Run: .venv/bin/python -m bench.quota_correctness [--seconds 70] [--tpm 20000] [--no-record]
Starts its own redis-server on a free port and stops it; appends the figures to
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import multiprocessing
import random
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.common import ROOT, machine, stamp
from pipeline.router.errors import QuotaExceeded
from pipeline.router.quota import QuotaLimits, RedisQuotaStore
from tests.servers import redis_server as real_redis

PROCESSES = 4
CLIENTS_PER_PROCESS = 50
HEADING = "## Quota correctness (issue #3) — `bench/quota_correctness.py`"


@dataclass(frozen=True)
class Admission:
    at: float
    reserved: int
    used: int


@dataclass(frozen=True)
class ProcessResult:
    admissions: list[Admission]
    refusals: int
    retry_afters: list[float]


@contextmanager
def redis_server() -> Iterator[str]:
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server not found: apt-get update && apt-get install -y "
                         "redis-server")
    with tempfile.TemporaryDirectory() as workdir, real_redis(Path(workdir)) as url:
        yield url


async def _clients(url: str, tenant: str, tpm: int, start_at: float, end_at: float,
                   seed: int) -> ProcessResult:
    store = RedisQuotaStore.from_url(url)
    limits = QuotaLimits(tokens_per_minute=tpm, tokens_per_day=10**9)
    admissions: list[Admission] = []
    retry_afters: list[float] = []
    refusals = 0

    async def client(n: int) -> None:
        nonlocal refusals
        rng = random.Random(seed * 1000 + n)
        await asyncio.sleep(max(start_at - time.time(), 0) + rng.uniform(0, 0.5))
        while time.time() < end_at:
            tokens = rng.randint(300, 1_500)
            while True:
                try:
                    reservation = await store.reserve(tenant, tokens, limits)
                    break
                except QuotaExceeded as exc:
                    refusals += 1
                    retry_afters.append(exc.retry_after)
                    wait = exc.retry_after + rng.uniform(0, 0.05)
                    if n % 2:  # impatient
                        wait = min(wait, rng.uniform(0.2, 3.0))
                    await asyncio.sleep(min(wait, max(end_at - time.time(), 0)))
                    if time.time() >= end_at:
                        return
            await asyncio.sleep(rng.uniform(0.2, 2.0))  # the model generating
            used = rng.randint(int(tokens * 0.3), tokens)
            await store.settle(reservation, used)
            admissions.append(Admission(reservation.at, tokens, used))

    await asyncio.gather(*(client(n) for n in range(CLIENTS_PER_PROCESS)))
    await store.close()
    return ProcessResult(admissions, refusals, retry_afters)


def run_process(args: tuple[str, str, int, float, float, int]) -> ProcessResult:
    return asyncio.run(_clients(*args))


def worst_window(admissions: list[Admission], field: str, window_s: float = 60.0) -> int:
    """Max of the `field` tokens summed over [t, t + window_s) for t at every admission
    (the worst interval always starts at an admission)."""
    times = [a.at for a in admissions]
    values = [getattr(a, field) for a in admissions]
    prefix = [0]
    for v in values:
        prefix.append(prefix[-1] + v)
    best = 0
    for i, t in enumerate(times):
        j = bisect.bisect_left(times, t + window_s)
        best = max(best, prefix[j] - prefix[i])
    return best


def report(tpm: int, seconds: float, results: list[ProcessResult]) -> list[str]:
    admissions = sorted((a for r in results for a in r.admissions), key=lambda a: a.at)
    retry_afters = [x for r in results for x in r.retry_afters]
    max_reservation = max(a.reserved for a in admissions)
    net = worst_window(admissions, "used")
    gross = worst_window(admissions, "reserved")
    span = admissions[-1].at - admissions[0].at
    verdict = ("within the limit" if net <= tpm else
               "over the limit by less than one reservation" if net - tpm <= max_reservation
               else "OVER the limit by more than one reservation")
    return [
        f"| clients / processes | {PROCESSES * CLIENTS_PER_PROCESS} / {PROCESSES} |",
        f"| limit | {tpm:,} tokens per minute, requests of 300-1,500 tokens |",
        f"| run | {seconds:.0f} s real time ({span:.1f} s from first to last admission) |",
        f"| admissions / refusals | {len(admissions):,} / "
        f"{sum(r.refusals for r in results):,} |",
        f"| max settled tokens in any 60 s interval | **{net:,}** "
        f"({net / tpm:.3f} × limit) — {verdict} |",
        f"| max reserved tokens in any 60 s interval (refunds re-admitted) | {gross:,} |",
        f"| largest reservation | {max_reservation:,} |",
        f"| retry_after given (p50 / p95 / max) | "
        f"{statistics.median(retry_afters):.2f} / "
        f"{statistics.quantiles(retry_afters, n=20)[-1]:.2f} / {max(retry_afters):.2f} s |",
    ]


def record(lines: list[str], command: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    version = subprocess.run(["redis-server", "--version"], capture_output=True,
                             text=True).stdout.split()[2].removeprefix("v=")
    entry = "\n".join([
        f"{stamp()} — {machine()}; redis-server {version} on 127.0.0.1, Redis's own clock.",
        "", "| measure | result |", "| --- | --- |", *lines, ""])
    text = path.read_text()  # re-read right before writing: others append too
    if HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n\nRun: `{command}`\n\n{entry}"
    else:
        start = text.index(HEADING)
        next_heading = text.find("\n## ", start + len(HEADING))
        end = len(text) if next_heading == -1 else next_heading + 1
        section = text[start:end].rstrip("\n") + f"\n\n{entry}\n"
        text = text[:start] + section + text[end:]
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=70.0)
    parser.add_argument("--tpm", type=int, default=20_000)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    with redis_server() as url:
        start_at = time.time() + 3  # every process spawned and connected by then
        end_at = start_at + args.seconds
        jobs = [(url, "bench-tenant", args.tpm, start_at, end_at, seed)
                for seed in range(PROCESSES)]
        with multiprocessing.get_context("spawn").Pool(PROCESSES) as pool:
            results = pool.map(run_process, jobs)
    lines = report(args.tpm, args.seconds, results)
    print("\n".join(lines))
    if not args.no_record:
        record(lines, ".venv/bin/python -m bench.quota_correctness" + (
            f" --seconds {args.seconds:g}" if args.seconds != 70 else ""))


if __name__ == "__main__":
    main()
