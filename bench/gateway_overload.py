"""10× overload on the gateway: `secanalyst gateway` (uvicorn, one process) in front of the
vLLM simulator, its own PostgreSQL, a small admission limit, a standard tenant `bulk`
(90% of requests, refused 503 when the queue is full) and a premium tenant `small` (10%)
with a small token quota (refused 429 once it is spent).

Measures, open loop at 10× the measured capacity:
- every refused request gets 429 or 503 with an integer Retry-After;
- the time to refuse, server-side (the gateway's `Server-Timing: gw;dur=` = arrival stamp
  → response start, per request, cross-checked against the
  `secanalyst_gateway_response_start_seconds` histogram on /metrics) and client-side
  (send → answer, which adds the load generator's own scheduling, the TCP stack and the
  time the request waits for the gateway's event loop before it is stamped);
- that no request waits past its deadline (refusals: gw;dur ≤ deadline; served: the
  gateway's `wait;dur=` = arrival → dispatch ≤ deadline);
- the gateway's RSS sampled every 0.5 s (flat = no growth with the backlog).

The load generator is one asyncio process (aiohttp, one pooled connector), as light as it
gets in Python; its CPU use is printed next to the gateway's.

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
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import psutil
from prometheus_client.parser import text_string_to_metric_families

from bench.common import machine, stamp
from pipeline.cli.usage import create_api_key, maintain_partitions
from pipeline.config import DatabaseSettings, Settings
from pipeline.devstack.postgres import EmbeddedPostgres
from pipeline.store.migrate import migrate
from tests.servers import free_port, stop, wait_http

ROOT = Path(__file__).parents[1]
MODEL = "smollm2-135m-instruct"
SLOTS = 4            # admission: requests in flight per replica
QUEUE = 8            # admission queue size
DEADLINE_S = 1.0     # how long a request may wait for a slot, from its arrival
SMALL_QUOTA = 600    # tokens per minute of the tenant "small" (~16 requests a minute)
HISTOGRAM = "secanalyst_gateway_response_start_seconds"
LOOP_LAG = "secanalyst_gateway_event_loop_lag_seconds"


@dataclass
class Result:
    tenant: str
    status: int
    client_s: float
    retry_after: str | None
    server_s: float | None  # Server-Timing gw (arrival → response start)
    wait_s: float | None    # Server-Timing wait (arrival → dispatch), served only
    reason: str | None = None  # X-Secanalyst-Refusal of a 503


def server_timing(header: str) -> dict[str, float]:
    """`gw;dur=1.2, wait;dur=3` → {"gw": 0.0012, "wait": 0.003} (seconds)."""
    found: dict[str, float] = {}
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key == "dur":
                found[name] = float(value) / 1000
    return found


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def one(session: aiohttp.ClientSession, url: str, key: str, tenant: str,
              results: list[Result]) -> None:
    body = {"model": MODEL, "max_tokens": 16,
            "messages": [{"role": "user", "content": "Explain Wazuh rule 5710 briefly."}]}
    started = time.perf_counter()
    try:
        async with session.post(url, json=body,
                                headers={"Authorization": f"Bearer {key}"}) as response:
            await response.read()
            status, headers = response.status, response.headers
    except (aiohttp.ClientError, TimeoutError):
        results.append(Result(tenant, -1, time.perf_counter() - started, None, None, None))
        return
    elapsed = time.perf_counter() - started
    timing = server_timing(", ".join(headers.getall("Server-Timing", [])))
    results.append(Result(tenant, status, elapsed, headers.get("Retry-After"),
                          timing.get("gw"), timing.get("wait"),
                          headers.get("X-Secanalyst-Refusal")))


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000),
                                 timeout=aiohttp.ClientTimeout(total=60))


async def drive(url: str, keys: dict[str, str], rate: float, seconds: float,
                rss: list[float], pid: int) -> list[Result]:
    results: list[Result] = []
    process = psutil.Process(pid)
    async with session() as client:
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
                next_sample += 0.5
            await asyncio.sleep(0.002)
        await asyncio.gather(*tasks)
    rss.append(process.memory_info().rss / 2**20)
    return results


async def capacity(url: str, key: str) -> tuple[float, float]:
    """(requests/s the admission slots sustain, mean service seconds), measured closed loop
    with exactly SLOTS concurrent callers."""
    results: list[Result] = []
    async with session() as client:
        start = time.perf_counter()

        async def caller() -> None:
            for _ in range(6):
                await one(client, url, key, "bulk", results)

        await asyncio.gather(*(caller() for _ in range(SLOTS)))
        elapsed = time.perf_counter() - start
    ok = [r for r in results if r.status == 200]
    return len(ok) / elapsed, statistics.mean(r.client_s for r in ok)


Buckets = dict[str, list[tuple[float, float]]]


def histograms(metrics_url: str) -> Buckets:
    """status → [(le, cumulative count)] of the response-start histogram, and "lag" →
    those of the event-loop lag."""
    import urllib.request

    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        text = response.read().decode()
    found: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name not in (HISTOGRAM, LOOP_LAG):
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                label = sample.labels.get("status", "lag")
                found.setdefault(label, []).append((float(sample.labels["le"]), sample.value))
    return found


def histogram_delta(before: Buckets, after: Buckets, status: str
                    ) -> tuple[int, float, float, float]:
    """(count, share ≤ 5 ms, p99 upper bound, max upper bound in s) of `status` between
    two scrapes."""
    old = dict(before.get(status, []))
    buckets = [(le, count - old.get(le, 0.0)) for le, count in sorted(after.get(status, []))]
    total = buckets[-1][1] if buckets else 0.0
    if total == 0:
        return 0, float("nan"), float("nan"), float("nan")
    under_5ms = next(count for le, count in buckets if le >= 0.005) / total
    p99 = next(le for le, count in buckets if count >= 0.99 * total)
    top = next(le for le, count in buckets if count >= total)
    return int(total), under_5ms, p99, top


# A control: an otherwise idle process (niceness 0) measuring how late its own 50 ms timer
# fires; what it sees is the machine's share of the gateway's event-loop lag.
PROBE = """
import sys, time
lags = []
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    started = time.monotonic()
    time.sleep(0.05)
    lags.append(time.monotonic() - started - 0.05)
lags.sort()
print(f"{sum(x <= 0.005 for x in lags) / len(lags):.3f} {lags[int(0.99 * (len(lags) - 1))]:.4f} "
      f"{lags[-1]:.4f}")
"""


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--overload", type=float, default=10)
    parser.add_argument("--helpers-nice", type=int, default=0,
                        help="niceness of the simulator and this load generator (they stand "
                             "in for other machines; 0 = compete with the gateway for CPU)")
    parser.add_argument("--record", action="store_true",
                        help="print the markdown section for docs/benchmarks.md")
    args = parser.parse_args()

    state = Path(tempfile.mkdtemp(prefix="gw-overload-"))
    postgres = EmbeddedPostgres(state_dir=state, port=free_port())
    postgres.start()
    sim_port, gw_port = free_port(), free_port()
    sim = subprocess.Popen([sys.executable, "-m", "bench.vllm_sim", "--port", str(sim_port),
                            "--model", MODEL, "--max-num-seqs", str(SLOTS),
                            "--output-tokens", "16", "--itl-ms", "15"], cwd=ROOT,
                           preexec_fn=lambda: os.nice(args.helpers_nice))
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
                   # premium: it may evict a queued bulk request, so it is not shed
                   # and meets its quota (429) instead of the full queue (503)
                   "small": {"tokens_per_minute": SMALL_QUOTA, "priority": "premium"}}),
               "SECANALYST_LOG_LEVEL": "ERROR", "SECANALYST_LOG_FORMAT": "json"}
        wait_http(f"http://127.0.0.1:{sim_port}/health", sim)
        gateway = subprocess.Popen([str(ROOT / ".venv/bin/secanalyst"), "gateway", "--port",
                                    str(gw_port)], cwd=state, env=env)
        wait_http(f"http://127.0.0.1:{gw_port}/healthz", gateway)
        base = f"http://127.0.0.1:{gw_port}"
        url = f"{base}/v1/chat/completions"
        cap, service_s = asyncio.run(capacity(url, keys["bulk"]))
        rate = cap * args.overload
        rss: list[float] = []
        gw_process, me = psutil.Process(gateway.pid), psutil.Process()
        before = histograms(f"{base}/metrics")
        cpu_before = cpu_seconds(gw_process), cpu_seconds(me)
        switches = gw_process.num_ctx_switches().involuntary
        probe = subprocess.Popen([sys.executable, "-c", PROBE, str(args.seconds)],
                                 stdout=subprocess.PIPE, text=True)
        os.nice(args.helpers_nice)  # after the gateway and the probe started: they keep 0
        results = asyncio.run(drive(url, keys, rate, args.seconds, rss, gateway.pid))
        share, p99, top = (float(x) for x in probe.communicate(timeout=30)[0].split())
        cpu = cpu_seconds(gw_process) - cpu_before[0], cpu_seconds(me) - cpu_before[1]
        switches = gw_process.num_ctx_switches().involuntary - switches
        after = histograms(f"{base}/metrics")
        load = os.getloadavg()[0]
    finally:
        if gateway is not None:
            stop(gateway)
        stop(sim)
        postgres.stop()
    report(results, cap, service_s, rate, rss, cpu, (before, after), args,
           f"{switches} involuntary context switches of the gateway; load average {load:.1f}; "
           f"an idle process's 50 ms timer: {share:.1%} ≤ 5 ms late, p99 {p99 * 1000:.1f} ms, "
           f"max {top * 1000:.0f} ms")


def ms_figures(values: list[float]) -> str:
    return (f"{percentile(values, .5) * 1000:.2f} / {percentile(values, .99) * 1000:.2f} / "
            f"{max(values, default=float('nan')) * 1000:.2f} ms (n={len(values)})")


def report(results: list[Result], cap: float, service_s: float, rate: float,
           rss: list[float], cpu: tuple[float, float],
           scrapes: tuple[Buckets, Buckets], args: argparse.Namespace, machine_load: str
           ) -> None:
    ok = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status in (429, 503)]
    other = [r for r in results if r.status not in (200, 429, 503)]
    without_retry = [r for r in refused if not (r.retry_after or "").isdigit()]
    server = {s: [r.server_s for r in refused if r.status == s and r.server_s is not None]
              for s in (429, 503)}
    client = {s: [r.client_s for r in refused if r.status == s] for s in (429, 503)}
    all_server = server[429] + server[503]
    # Refused on arrival vs refused after a wait in the admission queue (its deadline came,
    # or a premium request evicted it): the second kind takes up to the deadline by design.
    after_wait = {"deadline", "evicted"}
    queued = [r.server_s for r in refused if r.status == 503 and r.reason in after_wait
              and r.server_s is not None]
    server[503] = [r.server_s for r in refused if r.status == 503
                   and r.reason not in after_wait and r.server_s is not None]
    waits = [r.wait_s for r in ok if r.wait_s is not None]
    late_refusals = [s for s in all_server if s > DEADLINE_S + 0.005]
    late_served = [w for w in waits if w > DEADLINE_S]
    small = [r for r in results if r.tenant == "small"]
    hist = {s: histogram_delta(*scrapes, str(s)) for s in ("429", "503", "lag")}
    warm = rss[len(rss) // 4:]  # after the first quarter of the run
    rows = [
        ("capacity (closed loop, 4 slots)", f"{cap:.1f} req/s, {service_s * 1000:.0f} ms each"),
        ("offered (open loop)", f"{rate:.0f} req/s for {args.seconds:.0f} s "
                                f"({args.overload:.0f}×), {len(results)} requests"),
        ("served 200", f"{len(ok)} ({len(ok) / args.seconds:.1f}/s)"),
        ("refused 429 / 503", f"{len(client[429])} / "
                              f"{len(client[503])}"),
        ("tenant `small`: 200 / 429 / 503", f"{sum(r.status == 200 for r in small)} / "
                                            f"{sum(r.status == 429 for r in small)} / "
                                            f"{sum(r.status == 503 for r in small)}"),
        ("refused without an integer Retry-After", str(len(without_retry))),
        ("other outcomes (errors, timeouts)", str(len(other))),
        ("server-side refusal 429: p50 / p99 / max", ms_figures(server[429])),
        ("server-side refusal 503 on arrival: p50 / p99 / max", ms_figures(server[503])),
        ("server-side refusal 503 after queueing (deadline, evicted): min / max",
         f"{min(queued, default=0):.3f} / {max(queued, default=0):.3f} s (n={len(queued)})"),
        ("503 reasons", ", ".join(f"{k} {v}" for k, v in sorted(Counter(
            r.reason for r in refused if r.status == 503).items(), key=str))),
        ("/metrics histogram 429: n, ≤ 5 ms, p99 bucket",
         f"{hist['429'][0]}, {hist['429'][1]:.1%}, ≤ {hist['429'][2] * 1000:g} ms"),
        ("/metrics histogram 503: n, ≤ 5 ms, p99 bucket",
         f"{hist['503'][0]}, {hist['503'][1]:.1%}, ≤ {hist['503'][2] * 1000:g} ms"),
        ("event-loop lag (50 ms timer): n, ≤ 5 ms, p99 / max bucket",
         f"{hist['lag'][0]}, {hist['lag'][1]:.1%}, ≤ {hist['lag'][2] * 1000:g} / "
         f"≤ {hist['lag'][3] * 1000:g} ms"),
        ("client-side refusal 429: p50 / p99 / max", ms_figures(client[429])),
        ("client-side refusal 503: p50 / p99 / max", ms_figures(client[503])),
        (f"refusals > 5 ms past the deadline ({DEADLINE_S} s), server-side",
         f"{len(late_refusals)} (max {max(all_server, default=0):.3f} s)"),
        ("served: arrival → dispatch wait p50 / max (server-side)",
         f"{percentile(waits, .5) * 1000:.0f} / {max(waits, default=0) * 1000:.0f} ms; "
         f"{len(late_served)} over the deadline"),
        ("slowest answer, client-side", f"{max(r.client_s for r in results):.3f} s"),
        ("gateway RSS first / last / max", f"{rss[0]:.0f} / {rss[-1]:.0f} / {max(rss):.0f} MiB "
                                           f"({len(rss)} samples every 0.5 s)"),
        ("gateway RSS after warm-up: min / max", f"{min(warm):.0f} / {max(warm):.0f} MiB"),
        ("CPU used during the run: gateway / load generator",
         f"{cpu[0]:.1f} / {cpu[1]:.1f} s ({cpu[0] / args.seconds:.0%} / "
         f"{cpu[1] / args.seconds:.0%} of one core)"),
        ("machine during the run", machine_load),
    ]
    width = max(len(k) for k, _ in rows)
    rows.append(("helpers' niceness (simulator, load generator)", str(args.helpers_nice)))
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    if args.record:
        print(f"\n{stamp()} — {machine()}\n\n| measure | result |\n| --- | --- |")
        print("\n".join(f"| {k} | {v} |" for k, v in rows))


if __name__ == "__main__":
    main()
