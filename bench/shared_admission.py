"""Several routers in front of one replica (issue 15): do they hold it to the configured
admission limit together, as one router would, or each to the whole of it?

`--routers` routers, each built as the settings build them (`build_router`: quotas in a
real redis-server, its own admission, its own heartbeat), in one process and one event
loop — they share nothing but Redis and the replica, as separate pods would. Each gets
`--clients` clients sending streamed chats back to back (more than the limit: the
routers' queues fill). One simulated vLLM replica (bench/vllm_sim, room for far more
sequences than the limit) is asked for its `vllm:num_requests_running` +
`num_requests_waiting` every 20 ms: the requests the routers have put on it at once.

Two runs, the same load: the limits split between the routers (`AdmissionConfig.
split_between_routers`, the default with Redis quotas), and each router applying the
whole limit (the behaviour before, and of memory quotas). Heartbeats every 1 s here (5 s
by default); the peak is taken after a warm-up of 2 heartbeats, the time a router that
started together with the others needs to have counted them all.

    .venv/bin/python -m bench.shared_admission [--routers 3] [--limit 9] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import structlog

import bench.record
from bench.socket_clock import load_average
from bench.vllm_sim.harness import SimProcess, record
from pipeline.config import Settings
from pipeline.router import ChatRequest, Router, RouterError
from pipeline.router.build import build_router
from pipeline.router.config import (
    AdmissionConfig,
    PoolConfig,
    QuotaBackend,
    RouterConfig,
    TenantLimits,
)
from pipeline.router.tokens import counter_for
from pipeline.runtime import tokenizer_dir
from schemas.usage import UsageEvent
from tests.servers import redis_server

HEARTBEAT_S = 1.0
_GAUGE = re.compile(rb"^vllm:num_requests_(running|waiting)\{[^}]*\} ([0-9.e+]+)$", re.M)


class NoSink:
    def record(self, event: UsageEvent) -> None:
        pass


def make_router(url: str, redis_url: str, limit: int, split: bool, prefix: str) -> Router:
    config = RouterConfig(
        model_name="sim-model",
        pools={"default": PoolConfig(endpoints=[url], max_context_tokens=8192)},
        tenants=TenantLimits(tokens_per_minute=10**12, tokens_per_day=10**13),
        admission=AdmissionConfig(max_in_flight_per_replica=limit, max_queue=10_000,
                                  max_wait_s=120.0, split_between_routers=split,
                                  peers_heartbeat_s=HEARTBEAT_S),
        quota=QuotaBackend(redis_url=redis_url, key_prefix=prefix))
    return build_router(config, counter_for(tokenizer_dir(Settings())), NoSink())


async def clients(router: Router, count: int, until: float, failures: list[str]) -> int:
    """`count` clients, each sending a short streamed chat as soon as its last ended."""
    done = 0

    async def client(n: int) -> None:
        nonlocal done
        while time.monotonic() < until:
            request = ChatRequest(tenant_id="t", max_tokens=16, messages=[
                {"role": "user", "content": f"Explain alert {n}-{done}: sshd failure."}])
            try:
                async for _ in router.stream(request):
                    pass
                done += 1
            except RouterError as exc:
                failures.append(type(exc).__name__)

    await asyncio.gather(*(client(n) for n in range(count)))
    return done


async def replica_load(url: str, until: float, warm_until: float) -> list[float]:
    """The replica's running + waiting requests every 20 ms after the warm-up."""
    samples: list[float] = []
    metrics = url.removesuffix("/v1") + "/metrics"
    async with httpx.AsyncClient(timeout=2.0) as http:
        while time.monotonic() < until:
            body = (await http.get(metrics)).content
            if time.monotonic() >= warm_until:
                samples.append(sum(float(v) for _, v in _GAUGE.findall(body)))
            await asyncio.sleep(0.02)
    return samples


async def run(args: argparse.Namespace, split: bool, redis_url: str,
              url: str) -> dict[str, float]:
    prefix = f"bench-shared-{'split' if split else 'whole'}-{time.time_ns()}"
    routers = [make_router(url, redis_url, args.limit, split, prefix)
               for _ in range(args.routers)]
    failures: list[str] = []
    start = time.monotonic()
    until = start + args.seconds
    load = asyncio.create_task(replica_load(url, until, start + 2 * HEARTBEAT_S))
    try:
        done = await asyncio.gather(*(clients(r, args.clients, until, failures)
                                      for r in routers))
    finally:
        for r in routers:
            await r.close()
    samples = await load
    return {"peak": max(samples), "mean": statistics.fmean(samples),
            "p95": sorted(samples)[int(0.95 * (len(samples) - 1))],
            "requests": float(sum(done)), "failures": float(len(failures))}


async def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    load_before = load_average()[0]
    # Room for far more sequences than any router admits: the routers' admission, not the
    # replica's own max-num-seqs, decides how many it holds.
    sims = SimProcess(1, "--max-num-seqs", "1000", "--itl-ms", "20",
                      "--output-tokens", "16")
    await sims.ready()
    try:
        with tempfile.TemporaryDirectory() as workdir, redis_server(Path(workdir)) as redis_url:
            results = {mode: await run(args, mode == "split", redis_url, sims.urls[0])
                       for mode in ("split", "whole")}
    finally:
        sims.stop()
    results["load"] = {"before": load_before, "after": load_average()[0]}
    return results


def report(args: argparse.Namespace, results: dict[str, dict[str, float]]) -> None:
    split, whole = results["split"], results["whole"]
    bound = args.routers * -(-args.limit // args.routers)  # each router's share, rounded up
    command = (f".venv/bin/python -m bench.shared_admission --routers {args.routers} "
               f"--limit {args.limit} --clients {args.clients} --seconds {args.seconds:g}")
    met = split["p95"] <= bound
    bench.record.record(
        "router.shared_admission_p95_over_limit", round(split["p95"] / args.limit, 3),
        goal=(f"≤ {bound / args.limit:.3g}: {args.routers} routers hold one replica to "
              f"llm.max_in_flight_per_replica = {args.limit} together (requests on the "
              f"replica, p95 of 20 ms samples; each router its share, rounded up: ≤ "
              f"{bound}); each applying the whole limit: "
              f"{whole['p95'] / args.limit:.2f}× in the same run"),
        command=command)
    rows = "\n".join(
        f"| {name} | {r['peak']:.0f} | {r['p95']:.0f} | {r['mean']:.1f} | "
        f"{r['requests']:.0f} | {r['failures']:.0f} |"
        for name, r in (("split (default with Redis quotas)", split),
                        ("whole limit in each router", whole)))
    record("Routers sharing a replica: the admission limit split between them (issue 15) — "
           "`bench/shared_admission.py`", command, (
        f"{args.routers} routers (`build_router`, quotas and heartbeats in a real "
        f"redis-server, one event loop) × {args.clients} clients each, streamed chats back "
        f"to back for {args.seconds:g} s, one simulated replica with room for 1,000 "
        f"sequences; `llm.max_in_flight_per_replica` = {args.limit}. Requests on the "
        f"replica (running + waiting, its /metrics every 20 ms) after a {2 * HEARTBEAT_S:g} s "
        f"warm-up (heartbeats every {HEARTBEAT_S:g} s). Load average "
        f"{results['load']['before']:.2f} → {results['load']['after']:.2f}.\n\n"
        "| limits | requests on the replica: peak | p95 | mean | requests served | "
        "refused |\n|---|---:|---:|---:|---:|---:|\n"
        f"{rows}\n\n"
        f"- Split: p95 {split['p95']:.0f} requests on the replica against the bound "
        f"{bound} ({args.routers} × ⌈{args.limit}/{args.routers}⌉): "
        f"**{'met' if met else 'not met'}**; each applying the whole limit put "
        f"{whole['p95']:.0f} there (p95, {whole['p95'] / args.limit:.2f}× the limit).\n"
        "- The peaks are above the p95 in both runs by about the same: a router frees a "
        "slot at the stream's `[DONE]`, and its next request can reach the replica before "
        "the replica has counted the finished sequence out — a sample can see both.\n"
        "- A router counts the others within one heartbeat (5 s by default); until then "
        "a pod that has just started with others applies what it has counted so far."))
    print(f"split p95 {split['p95']:.0f} (bound {bound}), whole p95 {whole['p95']:.0f}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--routers", type=int, default=3)
    parser.add_argument("--limit", type=int, default=9,
                        help="llm.max_in_flight_per_replica, for all routers together")
    parser.add_argument("--clients", type=int, default=12, help="per router")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--no-record", action="store_true")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    figures = asyncio.run(main(arguments))
    print(figures)
    if not arguments.no_record:
        report(arguments, figures)
