"""Router overhead per request, ours vs litellm.Router (least-busy), in one run, against
the simulator (replicas answering at once: no prefill, one output token).

Load: an OPEN loop at `--rate` requests/s (after a warm-up of `--warmup-s` at that rate):
request i is due at start + i / rate and is started then, whether or not the earlier
ones have finished, so a router that cannot keep up falls behind instead of slowing the
load down. `--seconds` of it for our router, `--litellm-seconds` for litellm (which falls
behind at 1,000 req/s: its backlog grows by the second; `--litellm-rate` offers it a rate
of its own, e.g. one it sustains). Every request is a distinct chat
(the alert's address and port vary), so no cache can serve a repeat. Printed per router:
the achieved rate (requests finished / time from the first due to the last finished),
the share that kept pace, i.e. started no more than `--late-ms` after its due time (the
event loop's timers have a 1 ms granularity; a loop that cannot keep up falls behind
without bound), the lateness p99, the CPU per request of this process (router + HTTP
client + load generator) and of the simulator's, and the garbage collections.

Method: the time a request spends in the router minus the time it spends in the backend
call. Ours: `Router.complete` total − `ReplicaClient.chat` (the streamed HTTP call, read to
its end) = estimate (real tokenizer + chat template) + quota + admission + choose + record.
litellm: `Router.acompletion` total − `OpenAIChatCompletion.make_openai_chat_completion_request`
(its openai-SDK HTTP call) = routing, pre/post-call hooks, response transformation, logging.
Both are timed per request inside the process with perf_counter, so an event loop busy
with other requests (or stopped by a garbage collection) shows up in these figures too.

As in the gateway: the routers run on uvloop (uvicorn's loop; `--loop asyncio` for the
standard one), and the long-lived objects are frozen out of the garbage collector once
set up (`gc.freeze()`). The simulator's replicas run in `--sim-processes` processes on
the same machine.

Run: `.venv/bin/python -m bench.router_overhead [--rate 1000] [--seconds 10]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import gc
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from bench.vllm_sim.harness import SimProcess, percentile, record
from pipeline.config import Settings
from pipeline.router import ChatRequest, Router
from pipeline.router.config import DEFAULT_SCORER_WEIGHTS, PoolConfig, TenantLimits
from pipeline.router.dispatch import ReplicaClient
from pipeline.router.scoring import build_picker
from pipeline.router.tokens import counter_for
from pipeline.runtime import tokenizer_dir
from schemas.usage import UsageEvent

SIM_FLAGS = ["--max-num-seqs", "1000", "--prefill-ms-per-token", "0", "--itl-ms", "0",
             "--output-tokens", "1", "--cached-prefill-ms-per-token", "0"]
MESSAGES = [{"role": "system", "content": "You are a SOC analyst."},
            {"role": "user", "content": "Explain: sshd authentication failure for root from "
                                        "203.0.113.7 port 4242, rule 5710 level 5."}]


def chats(count: int) -> list[list[dict[str, str]]]:
    """`count` distinct chats (the alert's address and port vary, as in real traffic), so
    that no cache of a tokenizer or template can serve a repeat."""
    return [[MESSAGES[0], {"role": "user", "content": (
        f"Explain: sshd authentication failure for root from 203.0.{n // 250 % 250}."
        f"{n % 250 + 1} port {1024 + n % 60_000}, rule 5710 level 5.")}]
        for n in range(count)]
OURS, LITELLM = "our router", "litellm.Router least-busy"
_backend: contextvars.ContextVar[list[float]] = contextvars.ContextVar("backend")


class NullSink:
    def record(self, event: UsageEvent) -> None:
        pass


def timed(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await method(*args, **kwargs)
        finally:
            _backend.get().append(time.perf_counter() - started)

    return wrapper


@dataclass
class Run:
    overheads: list[float]  # seconds per successful request: total − backend
    lateness: list[float]  # seconds between a request's due time and its start
    errors: int
    achieved: float  # requests finished per second
    late_s: float
    cpu_ms: float = 0.0  # CPU of this process (router + HTTP client + load) per request
    sim_cpu_ms: float = 0.0  # CPU of the simulator processes per request

    @property
    def on_pace(self) -> float:
        return sum(1 for x in self.lateness if x <= self.late_s) / max(len(self.lateness), 1)

    def ms(self, q: float) -> float:
        return percentile(self.overheads, q) * 1000


class GCPauses:
    """Collections of the cyclic garbage collector and how long they stopped the loop."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)
        self._started = 0.0
        gc.callbacks.append(self._observe)

    def _observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def take(self) -> str:
        pauses, self.pauses = self.pauses, []
        if not pauses:
            return "no GC"
        by_gen = {g: [s for gen, s in pauses if gen == g] for g in sorted({g for g, _ in pauses})}
        return ", ".join(f"gen{g} ×{len(v)} max {max(v) * 1000:.1f} ms"
                         for g, v in by_gen.items())


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes so far (Linux /proc; 0 elsewhere)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def open_loop(call: Callable[[int], Awaitable[Any]], rate: float, count: int,
                    late_s: float, sim_pids: list[int]) -> Run:
    """`count` requests due at `rate` per second, each started at its due time; request i
    is `call(i)`."""
    overheads: list[float] = []
    lateness: list[float] = []
    errors = 0

    async def one(i: int, due: float) -> None:
        nonlocal errors
        began = time.perf_counter()
        lateness.append(began - due)
        backend: list[float] = []
        _backend.set(backend)
        try:
            await call(i)
        except Exception as exc:
            errors += 1
            if errors == 1:
                print(f"first error: {exc!r}", flush=True)
            return
        overheads.append(time.perf_counter() - began - sum(backend))

    tasks: list[asyncio.Task[None]] = []
    cpu, sim_cpu = time.process_time(), cpu_seconds(sim_pids)
    start = time.perf_counter()
    for i in range(count):
        due = start + i / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    achieved = count / (time.perf_counter() - start)
    return Run(overheads, lateness, errors, achieved, late_s,
               (time.process_time() - cpu) / count * 1000,
               (cpu_seconds(sim_pids) - sim_cpu) / count * 1000)


def after(call: Callable[[int], Awaitable[Any]], offset: int,
          ) -> Callable[[int], Awaitable[Any]]:
    """Request i of the measured run is chat `offset + i` (the warm-up took the first)."""
    async def shifted(i: int) -> Any:
        return await call(offset + i)

    return shifted


def summary(name: str, run: Run) -> str:
    return (f"{name}: overhead p50 {run.ms(50):.3f} ms, p99 {run.ms(99):.3f} ms over "
            f"{len(run.overheads)} requests ({run.errors} errors); achieved "
            f"{run.achieved:,.0f} req/s, {run.on_pace:.1%} kept pace (lateness p99 "
            f"{percentile(run.lateness, 99) * 1000:.1f} ms); CPU per request: "
            f"{run.cpu_ms:.3f} ms here, {run.sim_cpu_ms:.3f} ms in the simulator")


async def main(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    import litellm
    from litellm.llms.openai.openai import OpenAIChatCompletion

    litellm.suppress_debug_info = True
    ReplicaClient.chat = timed(ReplicaClient.chat)  # type: ignore[method-assign,assignment]
    OpenAIChatCompletion.make_openai_chat_completion_request = timed(  # type: ignore[method-assign]
        OpenAIChatCompletion.make_openai_chat_completion_request)
    counter = counter_for(tokenizer_dir(Settings()))
    per_process = args.replicas // args.sim_processes
    sims = [SimProcess(per_process, *SIM_FLAGS) for _ in range(args.sim_processes)]
    urls = [u for sim in sims for u in sim.urls]
    count, late_s = round(args.rate * args.seconds), args.late_ms / 1000
    litellm_rate = args.litellm_rate or args.rate
    sim_pids = [sim.process.pid for sim in sims]
    results: dict[str, Run] = {}
    try:
        for sim in sims:
            await sim.ready()
        ours = Router(model_name="sim-model", counter=counter, usage=NullSink(),
                      pools={"default": PoolConfig(endpoints=urls, max_context_tokens=8192)},
                      tenants=TenantLimits(tokens_per_minute=10**12, tokens_per_day=10**13),
                      picker=build_picker(DEFAULT_SCORER_WEIGHTS, urls))
        theirs = litellm.Router(
            model_list=[{"model_name": "sim", "litellm_params": {
                "model": "openai/sim-model", "api_base": u, "api_key": "EMPTY"}}
                for u in urls], routing_strategy="least-busy", num_retries=0)
        warmup = round(args.rate * args.warmup_s)
        messages = chats(warmup + max(count, round(litellm_rate * args.litellm_seconds)))
        requests = [ChatRequest(tenant_id="t", messages=m, max_tokens=1) for m in messages]

        async def call_ours(i: int) -> None:
            await ours.complete(requests[i])

        async def call_litellm(i: int) -> None:
            await theirs.acompletion(model="sim", messages=messages[i], max_tokens=1)

        calls = {OURS: call_ours, LITELLM: call_litellm}
        # As the gateway does once started (pipeline/web/gateway.py): the long-lived
        # objects of the libraries (tokenizer, torch, litellm) out of the collector's
        # scans, else a full collection stalls the loop for ~0.4 s here.
        gc.collect()
        gc.freeze()
        gc_pauses = GCPauses()
        for name in (OURS, LITELLM) if args.routers == "both" else (
                (OURS,) if args.routers == "ours" else (LITELLM,)):
            rate = args.rate if name == OURS else litellm_rate
            measured = count if name == OURS else round(rate * args.litellm_seconds)
            # warm-up: connections, caches, the scraper's first stats
            await open_loop(calls[name], rate, round(rate * args.warmup_s), late_s, sim_pids)
            gc_pauses.take()
            results[name] = await open_loop(after(calls[name], warmup), rate, measured,
                                            late_s, sim_pids)
            print(f"{summary(name, results[name])}; {gc_pauses.take()}", flush=True)
        await ours.close()
    finally:
        for sim in sims:
            sim.stop()
    if args.no_record or len(results) < 2:
        return
    o, t = results[OURS], results[LITELLM]
    rows = "\n".join(
        f"| {name} | {r.ms(50):.3f} | {r.ms(99):.3f} | {len(r.overheads):,} | {r.errors} | "
        f"{r.achieved:,.0f} | {r.on_pace:.1%} | {percentile(r.lateness, 99) * 1000:,.1f} | "
        f"{r.cpu_ms:.3f} | {r.sim_cpu_ms:.3f} |" for name, r in results.items())
    body = (f"Open loop: {args.rate:,.0f} req/s offered for {args.seconds:g} s to our router "
            f"and {litellm_rate:,.0f} req/s for {args.litellm_seconds:g} s to litellm (after "
            f"{args.warmup_s:g} s of warm-up each), against {args.replicas} simulated replicas in "
            f"{args.sim_processes} processes answering at once (1 output token); distinct "
            f"chats; {args.loop} event loop. Overhead = time in the router − time in the "
            "backend HTTP call, per request (see the script's docstring). Kept pace = "
            f"started ≤ {args.late_ms:g} ms after its due time. CPU = CPU seconds of the "
            "router's process (router + HTTP client + load) and of the simulator's, per "
            f"request.{' ' + args.note if args.note else ''}\n\n"
            "| router | overhead p50 ms | p99 ms | requests | errors | achieved req/s | "
            "kept pace | lateness p99 ms | CPU ms/req | simulator CPU ms/req |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
            f"{rows}\n\n"
            f"litellm / ours: p50 **{t.ms(50) / o.ms(50):,.1f}×**, "
            f"p99 **{t.ms(99) / o.ms(99):,.1f}×**.")
    record("Router overhead, open loop (issue #3) — `bench/router_overhead.py`",
           f".venv/bin/python -m bench.router_overhead --rate {args.rate:g} "
           f"--seconds {args.seconds:g} --litellm-seconds {args.litellm_seconds:g}"
           + (f" --litellm-rate {args.litellm_rate:g}" if args.litellm_rate else ""), body)


def run(args: argparse.Namespace) -> None:
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(main(args))
    else:
        asyncio.run(main(args))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000.0, help="offered requests/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured, per router")
    parser.add_argument("--litellm-seconds", type=float, default=3.0,
                        help="measured for litellm (it falls behind: its backlog grows "
                             "by the second)")
    parser.add_argument("--litellm-rate", type=float, default=None,
                        help="offered to litellm instead of --rate (e.g. one it sustains)")
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--late-ms", type=float, default=5.0,
                        help="a request started later than this after its due time did "
                             "not keep pace")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--sim-processes", type=int, default=2)
    parser.add_argument("--routers", choices=("both", "ours", "litellm"), default="both")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--note", default="", help="appended to the recorded section text "
                                                   "(e.g. the load average)")
    parser.add_argument("--no-record", action="store_true")
    run(parser.parse_args())
