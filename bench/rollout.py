"""Model rollout and rollback without downtime (issue 14.2): a steady load through the
router while one pool's traffic shifts from model version v1 to v2 step by step
(0 → 10 → 50 → 100 %) and back to v1, with `Router.set_traffic_split` (rollout.py).

The simulated replicas run with `--strict-model`: like vLLM they answer 404 to a request
naming another model than the one they serve, so a request sent with the wrong version's
name fails. Reports failed requests (goal 0), per step the share of requests each version
served against its weight, and usage rows whose model is not the version that served them.

    .venv/bin/python -m bench.rollout [--step-seconds 5] [--rate 40] [--replicas 2]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import os
import time
from collections import Counter
from dataclasses import dataclass, field

import structlog

import bench.record
from bench.discovery import ListSink
from bench.vllm_sim.harness import SimProcess, record
from pipeline.config import Settings
from pipeline.router import ChatRequest, Router
from pipeline.router.config import PoolConfig
from pipeline.router.tokens import counter_for
from pipeline.runtime import tokenizer_dir

VERSIONS = ("v1", "v2")
STEPS = (0, 10, 50, 100, 0)  # percent of requests to v2; the last step is the rollback
SIM_FLAGS = ("--itl-ms", "20", "--output-tokens", "10", "--strict-model")
__all__ = ["ListSink", "rollout", "sims_per_version", "versioned_router"]


@dataclass
class StepResult:
    percent_v2: int
    served: Counter[str] = field(default_factory=Counter)  # version → requests served

    def within_tolerance(self) -> bool:
        """v2's count is what its weight gives: exactly at 0 and 100 %, else within four
        binomial standard deviations (a false alarm about once in 15,000 runs)."""
        n = sum(self.served.values())
        p = self.percent_v2 / 100
        expected, spread = n * p, 4 * math.sqrt(n * p * (1 - p)) + 1
        return abs(self.served["v2"] - expected) <= spread if 0 < p < 1 \
            else self.served["v2"] == round(expected)


@dataclass
class RolloutResult:
    requests: int
    failures: Counter[str]
    steps: list[StepResult]
    wrong_model_rows: int  # usage rows naming another model than the serving replica's
    rows: int

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


async def sims_per_version(replicas: int) -> dict[str, SimProcess]:
    """`replicas` simulated replicas per version, each serving that version's name."""
    sims = {v: SimProcess(replicas, "--served-model-name", v, *SIM_FLAGS) for v in VERSIONS}
    await asyncio.gather(*(s.ready() for s in sims.values()))
    return sims


def versioned_router(sims: dict[str, SimProcess], sink: ListSink) -> Router:
    models = {url: version for version, sim in sims.items() for url in sim.urls}
    pool = PoolConfig(endpoints=list(models), models=models, max_context_tokens=8192,
                      traffic_split={"v1": 100, "v2": 0})
    return Router(model_name="v1", counter=counter_for(tokenizer_dir(Settings())),
                  usage=sink, pools={"default": pool}, connect_timeout_s=1.0,
                  request_timeout_s=10.0)


async def rollout(router: Router, models: dict[str, str], sink: ListSink, *,
                  step_s: float, rate: float, settle_s: float = 0.1) -> RolloutResult:
    """A request every 1/`rate` s for len(STEPS) × `step_s` s; the split moves at each
    step. Requests sent within `settle_s` of a change are left out of the step counts
    (their version may have been drawn on either side of it); every one counts as failed
    or served."""
    total = int(len(STEPS) * step_s * rate)
    changes: list[float] = []
    failures: Counter[str] = Counter()
    served: list[tuple[float, str, str]] = []  # (sent at, replica, request id)

    async def one(n: int, start: float) -> None:
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        sent = time.monotonic()
        try:
            answer = await router.complete(ChatRequest(
                tenant_id=f"tenant-{n % 7}", max_tokens=8,
                messages=[{"role": "user", "content": f"alert {n}"}]))
        except Exception as exc:
            failures[type(exc).__name__] += 1
        else:
            served.append((sent, answer.replica, answer.request_id))

    async def shift() -> None:
        for i, percent in enumerate(STEPS):
            await asyncio.sleep(max(0.0, start + i * step_s - time.monotonic()))
            router.set_traffic_split("default", {"v1": 100 - percent, "v2": percent})
            changes.append(time.monotonic())

    start = time.monotonic()
    await asyncio.gather(shift(), *(one(n, start) for n in range(total)))
    steps = [StepResult(p) for p in STEPS]
    for sent, replica, _ in served:
        i = max(i for i, at in enumerate(changes) if at <= sent) if sent >= changes[0] else 0
        if sent - changes[i] >= settle_s or i == 0:
            steps[i].served[models[replica]] += 1
    rows = {e.request_id: e for e in sink.events if e.status_code == 200}
    wrong = sum(1 for _, replica, rid in served
                if rid not in rows or rows[rid].model_name != models[replica])
    return RolloutResult(total, failures, steps, wrong, len(rows))


async def run(step_s: float, rate: float, replicas: int) -> RolloutResult:
    sims = await sims_per_version(replicas)
    sink = ListSink()
    router = versioned_router(sims, sink)
    models = {url: v for v, sim in sims.items() for url in sim.urls}
    try:
        return await rollout(router, models, sink, step_s=step_s, rate=rate)
    finally:
        await router.close()
        for sim in sims.values():
            sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step-seconds", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second")
    parser.add_argument("--replicas", type=int, default=2, help="replicas per version")
    parser.add_argument("--no-record", dest="record", action="store_false")
    args = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    load_before = os.getloadavg()
    result = asyncio.run(run(args.step_seconds, args.rate, args.replicas))
    load_after = os.getloadavg()
    table = "".join(
        f"| {s.percent_v2} % | {s.served['v1']} | {s.served['v2']} | "
        f"{100 * s.served['v2'] / max(1, sum(s.served.values())):.1f} % | "
        f"{'yes' if s.within_tolerance() else 'NO'} |\n" for s in result.steps)
    print(f"failed {result.failed} {dict(result.failures)}; wrong-model rows "
          f"{result.wrong_model_rows}/{result.rows}\n{table}")
    if not args.record:
        return
    command = (f".venv/bin/python -m bench.rollout --step-seconds {args.step_seconds:g} "
               f"--rate {args.rate:g} --replicas {args.replicas}")
    goal = "0 failed requests during rollout and rollback"
    bench.record.record("rollout.failed_requests", result.failed, goal=goal, command=command)
    met = (result.failed == 0 and result.wrong_model_rows == 0
           and all(s.within_tolerance() for s in result.steps))
    record("Model rollout and rollback (issue 14.2) — `bench/rollout.py`", command, (
        f"{result.requests} requests at {args.rate:g}/s through the router to one pool of "
        f"{args.replicas} simulated replicas per model version (`--served-model-name v1|v2 "
        f"--strict-model`: a request naming the wrong version gets 404, as from vLLM); "
        f"`Router.set_traffic_split` moves v2's share 0 → 10 → 50 → 100 % and back to 0 "
        f"(rollback) every {args.step_seconds:g} s. Load average (1/5/15 min) before "
        f"{load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, after "
        f"{load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f} (2 cores, shared).\n\n"
        f"Failed requests: **{result.failed}**. Usage events (the rows the usage writer stores) "
        f"naming another model than the "
        f"version that served them: **{result.wrong_model_rows}** of {result.rows}.\n\n"
        "| v2 weight | served by v1 | by v2 | v2 share | within tolerance |\n"
        "|---|---|---|---|---|\n" + table +
        "\nTolerance: exact at 0 and 100 %, else within 4 binomial standard deviations; "
        "requests sent within 0.1 s of a change are left out of the step counts.\n\n"
        f"Goal (0 failed requests during rollout and rollback, shares following the "
        f"weights, every usage row naming its version): **{'met' if met else 'not met'}**."))


if __name__ == "__main__":
    main()
