"""Replicas that come and go (issue 14.1): a steady load through the router while its pool
scales 1 → 4 replicas and back to 1, the replicas announced by a discovery source this
script controls (as a headless Service's DNS would: `pipeline/router/discovery.py`).

Reports failed requests (goal 0), the time from a replica's announcement to the first
request it serves, and the requests sent to a replica after it was withdrawn (should be
only those the refresher had not yet seen withdrawn: at most `refresh_s` worth).

    .venv/bin/python -m bench.discovery [--seconds 24] [--rate 40] [--refresh 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import structlog

import bench.record
from bench.vllm_sim.harness import SimProcess, percentile, record
from pipeline.config import Settings
from pipeline.router import ChatRequest, Router
from pipeline.router.config import PoolConfig
from pipeline.router.discovery import StaticDiscovery
from pipeline.router.tokens import counter_for
from pipeline.runtime import tokenizer_dir
from schemas.usage import UsageEvent

REPLICAS = 4
SIM_FLAGS = ["--itl-ms", "20", "--output-tokens", "10"]


class ListSink:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> None:
        self.events.append(event)


@dataclass
class Load:
    served: list[tuple[float, str]] = field(default_factory=list)  # (sent at, replica)
    # (answered at, replica): on a loaded machine a request sent before a change may be
    # dispatched after it, so "before the change" is judged by when it was answered
    answered: list[tuple[float, str]] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)  # by exception type


async def steady_load(router: Router, total: int, rate: float) -> Load:
    """`total` small chat requests, one every 1/`rate` s, each recorded as served or failed."""
    load = Load()

    async def one(n: int) -> None:
        await asyncio.sleep(n / rate)
        sent = time.monotonic()
        try:
            completion = await router.complete(ChatRequest(
                tenant_id="bench", messages=[{"role": "user", "content": f"alert {n}"}],
                max_tokens=8))
        except Exception as exc:
            load.failures[type(exc).__name__] += 1
        else:
            load.served.append((sent, completion.replica))
            load.answered.append((time.monotonic(), completion.replica))

    await asyncio.gather(*(one(n) for n in range(total)))
    return load


async def run(seconds: float, rate: float, refresh_s: float) -> dict[str, float]:
    sims = SimProcess(REPLICAS, *SIM_FLAGS)
    await sims.ready()
    urls = sims.urls
    source = StaticDiscovery(urls[:1])
    router = Router(model_name="sim-model", counter=counter_for(tokenizer_dir(Settings())),
                    usage=ListSink(),
                    pools={"default": PoolConfig(endpoints=urls[:1], max_context_tokens=8192,
                                                  refresh_s=refresh_s)},
                    discovery={"default": source}, connect_timeout_s=1.0,
                    request_timeout_s=10.0)
    total = int(seconds * rate)

    # Scale up one replica at a time over the first half, down over the second.
    step = seconds / (2 * REPLICAS)
    announced: dict[str, float] = {}
    withdrawn: dict[str, float] = {}
    phase = random.Random(14)  # announcements fall anywhere between two refresher rounds
    try:
        running = asyncio.create_task(steady_load(router, total, rate))
        for count in [*range(2, REPLICAS + 1), *range(REPLICAS - 1, 0, -1)]:
            await asyncio.sleep(step + phase.uniform(0, refresh_s))
            previous = set(await source.endpoints())
            source.set(urls[:count])
            now = time.monotonic()
            for url in set(urls[:count]) - previous:
                announced[url] = now
            for url in previous - set(urls[:count]):
                withdrawn[url] = now
        load = await running
    finally:
        await router.close()
        sims.stop()
    served = load.served
    to_traffic = [min(t for t, r in served if r == url and t >= at) - at
                  for url, at in announced.items() if any(r == url and t >= at
                                                          for t, r in served)]
    late = sum(1 for t, r in served if r in withdrawn and t > withdrawn[r] + refresh_s)
    return {"requests": total, "failed": sum(load.failures.values()),
            "served": len(served), "late": late,
            "to_traffic_p50": percentile(to_traffic, 50) if to_traffic else -1.0,
            "to_traffic_max": max(to_traffic, default=-1.0),
            "joined": len(to_traffic), "announced": len(announced),
            "spread": len({r for _, r in served})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=24.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--refresh", type=float, default=0.5, help="PoolConfig.refresh_s")
    parser.add_argument("--no-record", dest="record", action="store_false")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    figures = asyncio.run(run(args.seconds, args.rate, args.refresh))
    print(figures)
    if not args.record:
        return
    command = (f".venv/bin/python -m bench.discovery --seconds {args.seconds:g} "
               f"--rate {args.rate:g} --refresh {args.refresh:g}")
    bench.record.record("discovery.failed_requests", figures["failed"], goal="0",
                        command=command)
    bench.record.record("discovery.time_to_traffic_max_s", round(figures["to_traffic_max"], 2),
                        goal="within seconds of the replica's announcement", command=command)
    record("Replicas that come and go (issue 14.1) — `bench/discovery.py`", command, (
        f"{figures['requests']:.0f} requests at {args.rate:g}/s through the router while its "
        f"pool scales 1 → {REPLICAS} → 1 simulated replicas (one step every "
        f"{args.seconds / (2 * REPLICAS):g}–{args.seconds / (2 * REPLICAS) + args.refresh:g}"
        " s), announced by a discovery source re-read "
        f"every {args.refresh:g} s.\n\n"
        "| failed requests | served | replicas announced / got traffic | time to traffic "
        "p50 / max | requests to a withdrawn replica after one refresh |\n"
        "|---|---|---|---|---|\n"
        f"| **{figures['failed']:.0f}** | {figures['served']:.0f} | "
        f"{figures['announced']:.0f} / {figures['joined']:.0f} | "
        f"{figures['to_traffic_p50']:.2f} s / {figures['to_traffic_max']:.2f} s | "
        f"{figures['late']:.0f} |\n\n"
        "Time to traffic: from the announcement to the first request sent there that it "
        "served: up to one refresh interval for the refresher's next round (announcements "
        "fall at random phases), its /health probe, then the scorers' share. A withdrawn "
        "replica's requests already running finished there (none failed); it got no new "
        "one once the refresher had seen it gone."))


if __name__ == "__main__":
    main()
