"""Router overhead per request, ours vs litellm.Router (least-busy), in one run, against
the simulator (4 replicas answering at once: no prefill, one output token).

Load: a closed loop of `--concurrency` callers, `--requests` requests per router, so each
router runs at the highest rate it sustains here. (Open-loop 1,000 req/s is beyond a
Python client + router + simulator sharing 2 cores: both routers then measure their own
backlog, not their overhead; the achieved rate is printed.)

Method: the time a request spends in the router minus the time it spends in the backend
call. Ours: `Router.complete` total − `ReplicaClient.chat` (the streamed HTTP call, read to
its end) = estimate (real tokenizer + chat template) + quota + admission + choose + record.
litellm: `Router.acompletion` total − `OpenAIChatCompletion.make_openai_chat_completion_request`
(its openai-SDK HTTP call) = routing, pre/post-call hooks, response transformation, logging.
Both are timed per request inside the process with perf_counter; on 2 shared cores an
overloaded event loop shows up in these figures too, so the achieved rate is printed.

Run: `.venv/bin/python -m bench.router_overhead [--concurrency 32] [--requests 3000]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from bench.vllm_sim.harness import SimProcess, percentile, record
from pipeline.config import LLMPool, Settings, TenantDefaults
from pipeline.router import ChatRequest, Router
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


async def load(call: Callable[[], Awaitable[Any]], concurrency: int, count: int,
               ) -> tuple[list[float], int, float]:
    """`concurrency` callers share `count` requests; per request: total − backend seconds."""
    overheads: list[float] = []
    errors = 0
    remaining = count
    start = time.perf_counter()

    async def caller() -> None:
        nonlocal errors, remaining
        while remaining > 0:
            remaining -= 1
            backend: list[float] = []
            _backend.set(backend)
            began = time.perf_counter()
            try:
                await call()
            except Exception as exc:
                errors += 1
                if errors == 1:
                    print(f"first error: {exc!r}")
                continue
            overheads.append(time.perf_counter() - began - sum(backend))

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return overheads, errors, count / (time.perf_counter() - start)


async def main(concurrency: int, count: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    import litellm
    from litellm.llms.openai.openai import OpenAIChatCompletion

    litellm.suppress_debug_info = True
    ReplicaClient.chat = timed(ReplicaClient.chat)  # type: ignore[method-assign]
    OpenAIChatCompletion.make_openai_chat_completion_request = timed(  # type: ignore[method-assign]
        OpenAIChatCompletion.make_openai_chat_completion_request)
    counter = counter_for(tokenizer_dir(Settings()))
    sim = SimProcess(4, *SIM_FLAGS)
    results: dict[str, tuple[list[float], int, float]] = {}
    try:
        await sim.ready()
        ours = Router(model_name="sim-model", counter=counter, usage=NullSink(),
                      pools={"default": LLMPool(endpoints=sim.urls, max_context_tokens=8192)},
                      tenants=TenantDefaults(tokens_per_minute=10**12, tokens_per_day=10**13),
                      picker=build_picker(Settings().llm.scorers, sim.urls))
        theirs = litellm.Router(
            model_list=[{"model_name": "sim", "litellm_params": {
                "model": "openai/sim-model", "api_base": u, "api_key": "EMPTY"}}
                for u in sim.urls], routing_strategy="least-busy", num_retries=0)
        request = ChatRequest(tenant_id="t", messages=MESSAGES, max_tokens=1)

        async def call_ours() -> None:
            await ours.complete(request)

        async def call_litellm() -> None:
            await theirs.acompletion(model="sim", messages=MESSAGES, max_tokens=1)

        for name, call in (("our router", call_ours), ("litellm.Router least-busy",
                                                        call_litellm)):
            await load(call, concurrency, 200)  # warm-up: connections, caches
            results[name] = await load(call, concurrency, count)
            overheads, errors, achieved = results[name]
            print(f"{name}: p50 {percentile(overheads, 50) * 1000:.3f} ms, p99 "
                  f"{percentile(overheads, 99) * 1000:.3f} ms over {len(overheads)} requests "
                  f"({errors} errors), achieved {achieved:,.0f} req/s", flush=True)
        await ours.close()
    finally:
        sim.stop()
    (o, _, _), (t, _, _) = results["our router"], results["litellm.Router least-busy"]
    rows = "\n".join(
        f"| {name} | {percentile(v, 50) * 1000:.3f} | {percentile(v, 99) * 1000:.3f} | "
        f"{len(v)} | {e} | {a:,.0f} |" for name, (v, e, a) in results.items())
    body = (f"{count:,} requests per router from {concurrency} concurrent callers (closed "
            "loop) against 4 simulated replicas in one process answering at once "
            "(1 output token). Overhead "
            "= time in the router − time in the backend HTTP call, per request (see the "
            "script's docstring).\n\n| router | overhead p50 ms | p99 ms | requests | errors "
            f"| achieved req/s |\n| --- | ---: | ---: | ---: | ---: | ---: |\n{rows}\n\n"
            f"litellm / ours: p50 **{percentile(t, 50) / percentile(o, 50):.1f}×**, "
            f"p99 **{percentile(t, 99) / percentile(o, 99):.1f}×**.")
    record("Router overhead (issue #3) — `bench/router_overhead.py`",
           f".venv/bin/python -m bench.router_overhead --concurrency {concurrency} "
           f"--requests {count}",
           body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    asyncio.run(main(args.concurrency, args.requests))
