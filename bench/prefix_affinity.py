"""Prefix affinity on vs off, in one run: prefix-cache hit rate (from the replicas' own
`vllm:prefix_cache_hits` / `vllm:prefix_cache_queries`) and p95 TTFT.

Workload: explain-like prompts — one shared system prompt, then the runbook excerpt of the
alert's rule (40 rules, Zipf-like popularity), then a distinct alert. Each replica's prefix
cache holds about a third of the rules' prefixes, so spreading every rule over every replica
thrashes it, while affinity keeps a rule on its replica.

Run on the simulator (default; a fresh one per variant):
  `.venv/bin/python -m bench.prefix_affinity [--seconds 20] [--rate 12]`
or against real vLLM replicas (counters are read before and after each variant):
  `.venv/bin/python -m bench.prefix_affinity --endpoints URL,URL --model NAME`
(URL: a replica's base URL, e.g. http://h1:8000/v1)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import time

import structlog

from bench.vllm_sim.harness import SimProcess, percentile, record, scrape
from pipeline.config import DEFAULT_SCORER_WEIGHTS, LLMPool, Settings, TenantDefaults
from pipeline.router import ChatRequest, Router
from pipeline.router.scoring import build_picker
from pipeline.router.tokens import TokenCounter, counter_for
from pipeline.runtime import tokenizer_dir
from schemas.usage import UsageEvent

REPLICAS = 4
RULES = 40
SIM_FLAGS = ["--max-num-seqs", "8", "--prefill-ms-per-token", "0.5", "--itl-ms", "20",
             "--output-tokens", "8", "--block-size", "16", "--prefix-cache-blocks", "450"]
VOCAB = ("process", "network", "login", "failed", "registry", "binary", "hash", "parent",
         "user", "session", "firewall", "port", "scan", "service", "account", "privilege",
         "escalation", "persistence", "lateral", "movement", "credential", "dump", "script")
SYSTEM = ("You are a senior SOC analyst explaining one Wazuh alert to a colleague. Reply "
          "with one JSON object: severity, summary, attack_ids, next_steps. ") * 6


class NullSink:
    def record(self, event: UsageEvent) -> None:
        pass


def runbook(rule: int) -> str:
    rng = random.Random(rule)
    return f"From the runbook of rule {rule}: " + " ".join(rng.choice(VOCAB)
                                                          for _ in range(380))


def workload(rate: float, seconds: float, seed: int) -> list[tuple[float, list[dict[str, str]]]]:
    rng = random.Random(seed)
    weights = [1 / (r + 1) ** 0.8 for r in range(RULES)]
    out, t, n = [], 0.0, 0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return out
        rule = rng.choices(range(RULES), weights)[0]
        alert = " ".join(f"{rng.choice(VOCAB)}{rng.randrange(10**6)}" for _ in range(40))
        n += 1
        out.append((t, [{"role": "system", "content": SYSTEM},
                        {"role": "user", "content": f"{runbook(rule)}\n\n<alert>{n} {alert}"
                                                    "</alert>\n\nExplain this alert."}]))


async def run_variant(counter: TokenCounter, urls: list[str], model: str, affinity: bool,
                      rate: float, seconds: float) -> tuple[float, float, float, int]:
    weights = dict(DEFAULT_SCORER_WEIGHTS)
    if not affinity:
        weights["prefix-affinity"] = 0.0
    router = Router(model_name=model, counter=counter, usage=NullSink(),
                    pools={"default": LLMPool(endpoints=urls, max_context_tokens=32768)},
                    tenants=TenantDefaults(tokens_per_minute=10**9, tokens_per_day=10**10),
                    picker=build_picker(weights, urls))
    before = await scrape(urls)
    ttfts: list[float] = []
    errors = 0
    start = time.perf_counter()

    async def one(offset: float, messages: list[dict[str, str]]) -> None:
        nonlocal errors
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        began, first = time.perf_counter(), []

        def on_delta(_: str) -> None:
            if not first:
                first.append(time.perf_counter())

        try:
            await router.complete(ChatRequest(tenant_id="t", messages=messages, max_tokens=8),
                                  on_delta=on_delta)
            ttfts.append(first[0] - began)
        except Exception:
            errors += 1

    try:
        await asyncio.gather(*(one(o, m) for o, m in workload(rate, seconds, seed=5)))
    finally:
        await router.close()
    after = await scrape(urls)
    hits = sum(after[u].prefix_cache_hits - before[u].prefix_cache_hits for u in urls)
    queries = sum(after[u].prefix_cache_queries - before[u].prefix_cache_queries for u in urls)
    return (hits / queries if queries else float("nan"), percentile(ttfts, 50),
            percentile(ttfts, 95), errors)


async def main(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    counter = counter_for(args.tokenizer or tokenizer_dir(Settings()))
    rows = {}
    for affinity in (True, False):
        sim = None
        urls = args.endpoints.split(",") if args.endpoints else []
        if not urls:
            sim = SimProcess(REPLICAS, *SIM_FLAGS)
            await sim.ready()
            urls = sim.urls
        try:
            rows[affinity] = await run_variant(counter, urls, args.model, affinity, args.rate,
                                               args.seconds)
        finally:
            if sim is not None:
                sim.stop()
        rate, p50, p95, errors = rows[affinity]
        print(f"affinity {'on ' if affinity else 'off'}: hit rate {rate:.1%}, TTFT p50 "
              f"{p50 * 1000:,.0f} ms, p95 {p95 * 1000:,.0f} ms, errors {errors}", flush=True)
    on, off = rows[True], rows[False]
    target = ("real vLLM replicas " + args.endpoints if args.endpoints else
              f"{REPLICAS} simulated replicas (prefill 0.5 ms/token, one at a time; cached "
              "blocks 0.02 ms/token; prefix cache of 450 blocks of 16 tokens each)")
    body = (f"{target}; {RULES} rules (Zipf-like), explain-like prompts (shared system "
            f"prompt + ~380-word runbook excerpt of the rule + a distinct alert), "
            f"{args.rate:g} req/s for {args.seconds:g} s per variant; other scorers at their "
            "default weights.\n\n| prefix-affinity | hit rate | TTFT p50 ms | TTFT p95 ms | "
            "errors |\n| --- | ---: | ---: | ---: | ---: |\n"
            + "\n".join(f"| {name} | {r[0]:.1%} | {r[1] * 1000:,.0f} | {r[2] * 1000:,.0f} | "
                        f"{r[3]} |" for name, r in (("on", on), ("off", off)))
            + f"\n\np95 TTFT off / on = **{off[2] / on[2]:.1f}×**.")
    command = ".venv/bin/python -m bench.prefix_affinity"
    if args.endpoints:
        command += f" --endpoints {args.endpoints} --model {args.model}"
    record("Prefix affinity (issue #3) — `bench/prefix_affinity.py`", command, body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", default="", help="comma-separated replica base URLs "
                        "(…/v1); default: start the simulator")
    parser.add_argument("--model", default="sim-model", help="served model name")
    parser.add_argument("--tokenizer", default=None, help="tokenizer dir (default: SmolLM2)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=12.0)
    asyncio.run(main(parser.parse_args()))
