"""10× overload on the gateway: `secanalyst gateway` (uvicorn) in front of the vLLM
simulator, its own PostgreSQL, a small admission limit and one tenant with a small quota.

Measures, open loop at 10× the measured capacity: every refused request gets 429 or 503
with Retry-After; the time to refuse (p50/p99; goal p99 ≤ 5 ms for refusals decided at
once); that no request waits in the queue past its deadline; the gateway's RSS over the
run (flat = no growth with the backlog).

Run: .venv/bin/python -m bench.gateway_overload [--seconds 20] [--record]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from bench.common import machine, stamp
from pipeline.cli_usage import create_api_key, maintain_partitions
from pipeline.config import DatabaseSettings, Settings
from pipeline.devstack.postgres import EmbeddedPostgres
from pipeline.store.migrate import migrate
from tests.integration.test_gateway import free_port, stop, wait_http

ROOT = Path(__file__).parents[1]
MODEL = "smollm2-135m-instruct"
SLOTS = 4            # admission: requests in flight per replica
QUEUE = 8            # admission queue size
DEADLINE_S = 1.0     # how long a request may wait for a slot
SMALL_QUOTA = 2_000  # tokens per minute of the tenant "small"


@dataclass
class Result:
    tenant: str
    status: int
    seconds: float
    retry_after: str | None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one(client: httpx.AsyncClient, url: str, key: str, tenant: str,
              results: list[Result]) -> None:
    body = {"model": MODEL, "max_tokens": 16,
            "messages": [{"role": "user", "content": "Explain Wazuh rule 5710 briefly."}]}
    started = time.perf_counter()
    try:
        response = await client.post(url, json=body, headers={"Authorization": f"Bearer {key}"})
        status, retry = response.status_code, response.headers.get("Retry-After")
    except httpx.HTTPError:
        status, retry = -1, None
    results.append(Result(tenant, status, time.perf_counter() - started, retry))


async def drive(url: str, keys: dict[str, str], rate: float, seconds: float,
                rss: list[float], pid: int) -> list[Result]:
    results: list[Result] = []
    process = psutil.Process(pid)
    limits = httpx.Limits(max_connections=2000, max_keepalive_connections=500)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        n, next_sample = 0, start
        while (now := time.perf_counter()) - start < seconds:
            due = int((now - start) * rate)
            while n < due:  # open loop: send on schedule whatever the answers do
                tenant = "small" if n % 10 == 0 else "bulk"
                tasks.append(asyncio.create_task(one(client, url, keys[tenant], tenant,
                                                     results)))
                n += 1
            if now >= next_sample:
                rss.append(process.memory_info().rss / 2**20)
                next_sample += 1.0
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
    rss.append(process.memory_info().rss / 2**20)
    return results


async def capacity(url: str, key: str) -> tuple[float, float]:
    """(requests/s the admission slots sustain, mean service seconds), measured closed loop
    with exactly SLOTS concurrent callers."""
    results: list[Result] = []
    async with httpx.AsyncClient(timeout=30) as client:
        start = time.perf_counter()

        async def caller() -> None:
            for _ in range(6):
                await one(client, url, key, "bulk", results)

        await asyncio.gather(*(caller() for _ in range(SLOTS)))
        elapsed = time.perf_counter() - start
    ok = [r for r in results if r.status == 200]
    return len(ok) / elapsed, statistics.mean(r.seconds for r in ok)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--overload", type=float, default=10)
    parser.add_argument("--record", action="store_true", help="append to docs/benchmarks.md")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="gw-overload-"))
    postgres = EmbeddedPostgres(state_dir=state, port=free_port())
    postgres.start()
    sim_port, gw_port = free_port(), free_port()
    sim = subprocess.Popen([sys.executable, "-m", "bench.vllm_sim", "--port", str(sim_port),
                            "--model", MODEL, "--max-num-seqs", str(SLOTS),
                            "--output-tokens", "16", "--itl-ms", "15"], cwd=ROOT)
    gateway: subprocess.Popen[bytes] | None = None
    try:
        settings = Settings(state_dir=state,
                            database=DatabaseSettings(url=postgres.address()))  # type: ignore[arg-type]
        migrate(settings.database_url)
        maintain_partitions(settings)
        keys = {t: create_api_key(settings, t)[1] for t in ("bulk", "small")}
        env = {**os.environ, "SECANALYST_STATE_DIR": str(state),
               "SECANALYST_DATABASE__URL": postgres.address(),
               "SECANALYST_LLM__POOLS": json.dumps({"default": {
                   "endpoints": [f"http://127.0.0.1:{sim_port}/v1"],
                   "max_context_tokens": 2048}}),
               "SECANALYST_LLM__MAX_IN_FLIGHT_PER_REPLICA": str(SLOTS),
               "SECANALYST_LLM__ADMISSION_QUEUE_SIZE": str(QUEUE),
               "SECANALYST_GATEWAY__QUEUE_DEADLINE_S": str(DEADLINE_S),
               "SECANALYST_TENANTS__OVERRIDES": json.dumps({
                   "bulk": {"tokens_per_minute": 100_000_000},
                   "small": {"tokens_per_minute": SMALL_QUOTA}}),
               "SECANALYST_LOG_LEVEL": "ERROR", "SECANALYST_LOG_FORMAT": "json"}
        wait_http(f"http://127.0.0.1:{sim_port}/health", sim)
        gateway = subprocess.Popen([str(ROOT / ".venv/bin/secanalyst"), "gateway", "--port",
                                    str(gw_port)], cwd=state, env=env)
        wait_http(f"http://127.0.0.1:{gw_port}/healthz", gateway)
        url = f"http://127.0.0.1:{gw_port}/v1/chat/completions"
        cap, service_s = asyncio.run(capacity(url, keys["bulk"]))
        rate = cap * args.overload
        rss: list[float] = []
        results = asyncio.run(drive(url, keys, rate, args.seconds, rss, gateway.pid))
    finally:
        if gateway is not None:
            stop(gateway)
        stop(sim)
        postgres.stop()
    report(results, cap, service_s, rate, rss, args)


def report(results: list[Result], cap: float, service_s: float, rate: float,
           rss: list[float], args: argparse.Namespace) -> None:
    ok = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status in (429, 503)]
    other = [r for r in results if r.status not in (200, 429, 503)]
    without_retry = [r for r in refused if not (r.retry_after or "").isdigit()]
    # Refused at once (queue full, quota) vs after waiting in the queue up to the deadline.
    at_once = [r.seconds * 1000 for r in refused if r.seconds < DEADLINE_S / 2]
    expired = [r.seconds for r in refused if r.seconds >= DEADLINE_S / 2]
    # A served request waited at most the deadline, then took its service time.
    worst_ok = max((r.seconds for r in ok), default=0.0)
    rows = [
        ("capacity (closed loop, 4 slots)", f"{cap:.1f} req/s, {service_s * 1000:.0f} ms each"),
        ("offered (open loop)", f"{rate:.0f} req/s for {args.seconds:.0f} s "
                                f"({args.overload:.0f}×), {len(results)} requests"),
        ("served 200", f"{len(ok)} ({len(ok) / args.seconds:.1f}/s)"),
        ("refused 429 / 503", f"{sum(r.status == 429 for r in refused)} / "
                              f"{sum(r.status == 503 for r in refused)}"),
        ("refused without an integer Retry-After", str(len(without_retry))),
        ("other outcomes (errors, timeouts)", str(len(other))),
        ("refused at once: p50 / p99 / max", f"{percentile(at_once, .5):.2f} / "
                                             f"{percentile(at_once, .99):.2f} / "
                                             f"{max(at_once, default=float('nan')):.2f} ms "
                                             f"(n={len(at_once)})"),
        ("refused at the queue deadline (1.0 s): max", f"{max(expired, default=0):.3f} s "
                                                       f"(n={len(expired)})"),
        ("slowest served request", f"{worst_ok:.3f} s (deadline {DEADLINE_S} s + service)"),
        ("gateway RSS first / last / max", f"{rss[0]:.0f} / {rss[-1]:.0f} / "
                                           f"{max(rss):.0f} MiB ({len(rss)} samples)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.record:
        record(rows, args)


def record(rows: list[tuple[str, str]], args: argparse.Namespace) -> None:
    lines = ["", "## Gateway under 10× overload (issue #3) — `bench/gateway_overload.py`", "",
             f"Run: `.venv/bin/python -m bench.gateway_overload --seconds {args.seconds:.0f} "
             "--record`", "",
             f"{stamp()} — {machine()}; `secanalyst gateway` (uvicorn, one process) → router "
             f"→ vLLM simulator (1 replica, {SLOTS} sequences, 16 output tokens, 15 ms ITL); "
             f"admission {SLOTS} in flight + queue {QUEUE}, deadline {DEADLINE_S} s; tenant "
             f"`small` (10% of requests) limited to {SMALL_QUOTA} tokens/min; load generator "
             "(httpx, open loop) on the same 2 cores. Times are client-side.", "",
             "| measure | result |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in rows]
    with (ROOT / "docs" / "benchmarks.md").open("a") as out:
        out.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
