"""Routing quality: p95 TTFT of our router vs round robin vs litellm.Router (least-busy),
in one run, on 4 simulated replicas with a mixed workload at ~85% of their capacity
(measured first, with round robin: a closed loop that keeps every replica busy).

Workload: Poisson arrivals; 80% short prompts (~110 tokens), 20% long (~1,500 tokens); two
tenants, `gold` (premium) and `std` (standard), half each. Two kinds of prompts:
- distinct (default): no prefix-cache hits at all; a long prompt's own prefill is then a
  floor under every router's p95, printed with the results;
- explain-like (`--shared-docs N`): every prompt opens with one system prompt, and a long
  prompt is one of N shared documents (a rule's runbook excerpts) + a distinct tail, with
  each replica's prefix cache (`--cache-blocks`) smaller than the documents together, and
  a `--warmup` of the same traffic first so the caches are as warm as in a running system.
`--priority-scheduling`: the replicas order their queues by request priority (vLLM's
`--scheduling-policy priority`) and our router sends each request's class.
TTFT is measured by the client: from the call to the first text piece, so it includes any
wait in the router's own admission queue.

Besides TTFT each router's balance: the busiest replica's request count (of the measured
part) ÷ the mean. `ours without slots` (in `--only` only) is our router with the `ttft`
scorer blind to decode slots (max-num-seqs set out of reach), for an A/B of that model;
`ours without recent-requests` (in `--only` only) is our router with that balance scorer
off. `ours with replica rates` (in `--only` only) is our router with the `ttft` scorer pricing
prompt tokens at each replica's own learned rate (`prefill_rate = "replica"`, the default
before the pool's median), for an A/B of that change.
With `--shared-docs`, ours vs round robin is recorded as
`router.mixed_p95_ratio_vs_round_robin` (litellm may be left out with `--only`).

Run: `.venv/bin/python -m bench.routing_quality [--seconds 25] [--load 0.85]
[--shared-docs 32 --cache-blocks 1024 --warmup 40] [--priority-scheduling]
[--only "our router,round robin"] [--no-record]`
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

import httpx
import structlog
from prometheus_client.parser import text_string_to_metric_families

from bench import record as headline
from bench.vllm_sim.harness import SimProcess, percentile, record, scrape
from pipeline.config import Settings
from pipeline.router import ChatRequest, Router
from pipeline.router.admission import Admission
from pipeline.router.config import DEFAULT_SCORER_WEIGHTS, PoolConfig, TenantLimits, TenantQuota
from pipeline.router.engine_stats import metrics_url
from pipeline.router.replicas import Pool
from pipeline.router.scoring import ReplicaPicker, build_picker
from pipeline.router.scoring.picker import Choice
from pipeline.router.tokens import Message, TokenCounter, counter_for
from pipeline.runtime import tokenizer_dir
from schemas.usage import UsageEvent

REPLICAS = 4
MAX_NUM_SEQS = 4
SIM_FLAGS = ["--max-num-seqs", str(MAX_NUM_SEQS), "--prefill-ms-per-token", "0.5",
             "--itl-ms", "20", "--itl-ms-per-running", "1", "--output-tokens", "16"]
SHORT_WORDS, LONG_WORDS = 110, 1500
BLOCK_TOKENS = 16  # the simulator's prefix-cache block
OUTPUT_TOKENS = 16
WORDS = ("alert", "sshd", "failed", "password", "user", "root", "from", "source", "address",
         "port", "rule", "level", "agent", "host", "login", "attempt", "denied", "session",
         "authentication", "opened", "closed", "firewall", "drop", "process", "command",
         "file", "integrity", "changed", "checksum", "registry", "key", "network")


def prefill_s(words: int) -> float:
    """The simulator's prefill time for one prompt (one prefill at a time per replica)."""
    return words * 0.5e-3


class NullSink:
    def record(self, event: UsageEvent) -> None:
        pass


class RoundRobin(ReplicaPicker):
    def __init__(self) -> None:
        super().__init__({})
        self._next = 0

    def choose(self, pool: Pool, *, needed_tokens: int, prompt_tokens: int = 0,
               messages: Sequence[Message] = (), exclude: object = ()) -> Choice:
        replica = pool.replicas[self._next % len(pool.replicas)]
        self._next += 1
        return Choice(replica, prompt_tokens)


Job = tuple[float, str, list[Message]]  # (arrival offset s, tenant, messages)
SYSTEM_WORDS = 48  # the shared system prompt of the shared-prefix workload (3 blocks)
UNIQUE_TAIL_WORDS = 100  # the request-specific end of a long shared-prefix prompt


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


def workload(rate: float, seconds: float, seed: int, long_words: int = LONG_WORDS,
             shared_docs: int = 0) -> list[Job]:
    """Poisson arrivals, 20% long prompts, tenants half and half. With `shared_docs` = 0
    every prompt is distinct; otherwise every request opens with one shared system prompt
    and a long prompt is one of `shared_docs` documents (the runbook excerpts of a rule,
    a policy under analysis) followed by a request-specific tail, as explain prompts are."""
    rng = random.Random(seed)
    system = words(random.Random(-1), SYSTEM_WORDS)
    docs = [words(random.Random(-2 - i), long_words - UNIQUE_TAIL_WORDS)
            for i in range(shared_docs)]
    out: list[Job] = []
    t = 0.0
    while True:
        t += rng.expovariate(rate)
        if t >= seconds:
            return out
        long = rng.random() < 0.2
        tenant = "gold" if rng.random() < 0.5 else "std"
        if not shared_docs:
            text = words(rng, long_words if long else SHORT_WORDS)
            out.append((t, tenant, [{"role": "user", "content": text}]))
            continue
        if long:
            text = rng.choice(docs) + " " + words(rng, UNIQUE_TAIL_WORDS)
        else:
            text = words(rng, SHORT_WORDS - SYSTEM_WORDS)
        out.append((t, tenant, [{"role": "system", "content": system},
                                {"role": "user", "content": text}]))


ROUTERS = ("our router", "round robin", "litellm least-busy")
NO_SLOTS = "ours without slots"  # the A/B of the decode-slot model (--only)
OWN_RATES = "ours with replica rates"  # the A/B of the ttft scorer's pooled prefill rate
NO_RECENT = "ours without recent-requests"  # the A/B of the balance scorer
OURS = ("our router", NO_SLOTS, OWN_RATES, NO_RECENT)
GOAL = ("≥ 2× lower p95 TTFT than round robin on the mixed workload; busiest replica "
        "≤ 1.1× mean")
Send = Callable[[str, list[Message]], Awaitable[float]]


async def drive(send: Send, jobs: list[Job], count_from: float = 0.0) -> dict[str, list[float]]:
    """Sends each job at its offset; the TTFTs of those sent from `count_from` on (before:
    a warm-up that fills the replicas' prefix caches, as a running system has them)."""
    ttfts: dict[str, list[float]] = {"gold": [], "std": [], "errors": [], "warm-up": []}
    start = time.perf_counter()

    async def one(offset: float, tenant: str, messages: list[Message]) -> None:
        await asyncio.sleep(max(0.0, start + offset - time.perf_counter()))
        try:
            ttft = await send(tenant, messages)
            ttfts[tenant if offset >= count_from else "warm-up"].append(ttft)
        except Exception:
            ttfts["errors"].append(1.0)

    await asyncio.gather(*(one(offset, tenant, messages) for offset, tenant, messages in jobs))
    return ttfts


async def request_counts(urls: list[str]) -> list[float]:
    """Requests each replica has taken so far (`vllm:request_success`)."""
    async with httpx.AsyncClient(timeout=5.0) as client:
        texts = [(await client.get(metrics_url(u))).text for u in urls]
    return [sum(sample.value for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name in ("vllm:request_success", "vllm:request_success_total"))
            for text in texts]


async def drive_balanced(send: Send, jobs: list[Job], warmup: float,
                         urls: list[str]) -> tuple[dict[str, list[float]], float]:
    """`drive`, plus the busiest replica's share of the measured part's requests:
    max ÷ mean of each replica's requests taken after the warm-up."""
    async def at_warmup_end() -> list[float]:
        await asyncio.sleep(warmup)
        return await request_counts(urls)

    before = asyncio.create_task(at_warmup_end())
    ttfts = await drive(send, jobs, warmup)
    counts = [b - a for a, b in zip(await before, await request_counts(urls), strict=True)]
    mean = sum(counts) / len(counts)
    return ttfts, (max(counts) / mean if mean else float("nan"))


async def measure_capacity(send: Send, seconds: float, callers: int,
                           jobs: Iterator[Job]) -> float:
    """Requests per second the replicas complete when never idle: a closed loop of
    `callers` (enough to keep every replica's queue non-empty) on the same mix."""
    done = 0
    stop = time.perf_counter() + seconds

    async def caller() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            _, tenant, messages = next(jobs)
            await send(tenant, messages)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return done / (time.perf_counter() - started)


def our_router(counter: TokenCounter, urls: list[str], picker: ReplicaPicker,
               per_replica: int, prefill_tokens: int | None = None,
               priority_scheduling: bool = False) -> Router:
    tenants = TenantLimits(tokens_per_minute=10**9, tokens_per_day=10**10,
                           overrides={"gold": TenantQuota(priority="premium")})
    return Router(model_name="sim-model", counter=counter, usage=NullSink(),
                  pools={"default": PoolConfig(endpoints=urls, max_context_tokens=32768,
                                               priority_scheduling=priority_scheduling)},
                  tenants=tenants, picker=picker,
                  admission=Admission(max_in_flight_per_replica=per_replica, max_queue=10_000,
                                      max_wait_s=120,
                                      max_prefill_tokens_per_replica=prefill_tokens))


def router_sender(router: Router) -> Send:
    async def send(tenant: str, messages: list[Message]) -> float:
        started = time.perf_counter()
        first: list[float] = []

        def on_delta(_: str) -> None:
            if not first:
                first.append(time.perf_counter())

        await router.complete(ChatRequest(tenant_id=tenant, messages=messages,
                                          max_tokens=OUTPUT_TOKENS), on_delta=on_delta)
        return first[0] - started

    return send


def variant_picker(name: str, weights: dict[str, float], urls: list[str]) -> ReplicaPicker:
    """One of our variants: the `ttft` scorer told the replicas' max-num-seqs, as a
    deployment configures it (vLLM does not export it) — out of reach for the variant
    blind to decode slots; each replica's own prefill rate for `OWN_RATES`; the
    `recent-requests` scorer off for `NO_RECENT`."""
    slots = 10**9 if name == NO_SLOTS else MAX_NUM_SEQS
    ttft: dict[str, object] = {"max_num_seqs": slots}
    if name == OWN_RATES:
        ttft["prefill_rate"] = "replica"
    if name == NO_RECENT:
        weights = {**weights, "recent-requests": 0.0}
    return build_picker(weights, urls, params={"ttft": ttft})


def quiet_logs() -> None:
    """Errors only (the simulator's word counts differ from the tokenizer's on purpose)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch at import
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)


def litellm_sender(urls: list[str]) -> tuple[Send, object]:
    import litellm

    litellm.suppress_debug_info = True
    router = litellm.Router(
        model_list=[{"model_name": "sim", "litellm_params": {
            "model": "hosted_vllm/sim-model", "api_base": url, "api_key": "EMPTY"}}
            for url in urls],
        routing_strategy="least-busy", num_retries=0)

    async def send(tenant: str, messages: list[Message]) -> float:
        started = time.perf_counter()
        first = None
        stream = await router.acompletion(model="sim", messages=messages,
                                          max_tokens=OUTPUT_TOKENS, stream=True)
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
        assert first is not None
        return first - started

    return send, router


def summary(name: str, ttfts: dict[str, list[float]], hit_rate: float | None,
            busiest: float, load: str) -> tuple[str, float]:
    both = ttfts["gold"] + ttfts["std"]
    p95 = percentile(both, 95)
    hits = "—" if hit_rate is None else f"{hit_rate:.0%}"
    line = (f"| {name} | {len(both)} | {len(ttfts['errors'])} | "
            f"{percentile(both, 50) * 1000:,.0f} | {p95 * 1000:,.0f} | "
            f"{percentile(ttfts['gold'], 95) * 1000:,.0f} | "
            f"{percentile(ttfts['std'], 95) * 1000:,.0f} | {hits} | {busiest:.2f}× | "
            f"{load} |")
    return line, p95


def describe_weights(weights: dict[str, float]) -> str:
    if weights == DEFAULT_SCORER_WEIGHTS:
        return "default scorer weights"
    return "scorer weights " + ", ".join(f"{k} {v:g}" for k, v in weights.items())


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


async def hit_rate(urls: list[str]) -> float | None:
    """The prefix-cache hit rate of the replicas together over the run (token-weighted)."""
    stats = (await scrape(urls)).values()
    queries = sum(s.prefix_cache_queries for s in stats)
    return sum(s.prefix_cache_hits for s in stats) / queries if queries else None


@dataclass(frozen=True)
class Setup:
    seconds: float
    load: float
    per_replica: int
    prefill_tokens: int | None
    weights: dict[str, float]
    long_words: int
    shared_docs: int
    cache_blocks: int
    priority_scheduling: bool
    warmup: float
    write: bool = True  # record the figures (docs/benchmarks.json, .md)

    def sim_flags(self) -> list[str]:
        return [*SIM_FLAGS, "--prefix-cache-blocks", str(self.cache_blocks),
                "--priority-scheduling", str(int(self.priority_scheduling))]

    def jobs(self, rate: float, seconds: float, seed: int) -> list[Job]:
        return workload(rate, seconds, seed, long_words=self.long_words,
                        shared_docs=self.shared_docs)

    def command(self) -> str:
        return (f".venv/bin/python -m bench.routing_quality --seconds {self.seconds:g} "
                f"--load {self.load:g} --warmup {self.warmup:g} "
                f"--per-replica {self.per_replica} "
                f"--prefill-tokens {self.prefill_tokens or 0} --long-words {self.long_words} "
                f"--shared-docs {self.shared_docs} --cache-blocks {self.cache_blocks}"
                + (" --priority-scheduling" if self.priority_scheduling else "")
                + ("" if self.weights == DEFAULT_SCORER_WEIGHTS else " --scorers " + ",".join(
                    f"{k}={v:g}" for k, v in self.weights.items()
                    if DEFAULT_SCORER_WEIGHTS.get(k) != v)))

    def describe_workload(self) -> str:
        if not self.shared_docs:
            return (f"80% prompts of ~{SHORT_WORDS} tokens, 20% of ~{self.long_words}, every "
                    f"prompt distinct (no prefix-cache hits)")
        doc = self.long_words - UNIQUE_TAIL_WORDS
        working_set = self.shared_docs * doc
        cache = self.cache_blocks * BLOCK_TOKENS
        return (f"explain-like prompts: every request opens with one {SYSTEM_WORDS}-token "
                f"system prompt; 80% then have ~{SHORT_WORDS - SYSTEM_WORDS} distinct tokens, "
                f"20% are one of {self.shared_docs} shared ~{doc}-token documents (uniformly "
                f"chosen: the runbook excerpts of a rule) + {UNIQUE_TAIL_WORDS} distinct "
                f"tokens. The documents total {working_set:,} tokens; each replica's prefix "
                f"cache holds {cache:,} ({cache / working_set:.0%} of them, "
                f"{4 * cache / working_set:.0%} for the four together)")


async def main(setup: Setup, routers: Sequence[str]) -> None:
    quiet_logs()
    # Prefill is serial per replica, so it bounds a replica's rate (without cache hits).
    mean_prefill = 0.8 * prefill_s(SHORT_WORDS) + 0.2 * prefill_s(setup.long_words)
    prefill_bound = REPLICAS / mean_prefill
    counter = counter_for(tokenizer_dir(Settings()))
    # Capacity is measured, not computed: decode holds a sequence slot too, and the
    # machine's own speed counts, so the prefill-only bound overstates it. Measured with
    # round robin: the load every router is offered is one round robin can carry.
    sim = SimProcess(REPLICAS, *setup.sim_flags())
    try:
        await sim.ready()
        router = our_router(counter, sim.urls, RoundRobin(), 10_000)
        try:
            capacity = await measure_capacity(router_sender(router), 15.0,
                                              callers=4 * REPLICAS * MAX_NUM_SEQS,
                                              jobs=iter(setup.jobs(100.0, 30.0, seed=5)))
        finally:
            await router.close()
    finally:
        sim.stop()
    rate = setup.load * capacity
    print(f"capacity measured {capacity:.1f} req/s (prefill-only bound {prefill_bound:.1f}, "
          f"mean prefill {mean_prefill * 1000:.0f} ms); offered {rate:.1f} req/s for "
          f"{setup.seconds:.0f} s per router", flush=True)
    lines, p95s, busiest = [], {}, {}
    for name in routers:
        sim = SimProcess(REPLICAS, *setup.sim_flags())  # a fresh simulator for each
        try:
            await sim.ready()
            jobs = setup.jobs(rate, setup.warmup + setup.seconds, seed=11)
            if name == "litellm least-busy":
                send, _ = litellm_sender(sim.urls)
                ttfts, busiest[name] = await drive_balanced(send, jobs, setup.warmup,
                                                            sim.urls)
            else:
                ours = name in OURS
                picker = (variant_picker(name, setup.weights, sim.urls)
                          if ours else RoundRobin())
                # Ours holds the queue itself (by class) beyond `per_replica` in flight;
                # round robin sends everything on, as a load-blind balancer would.
                router = (our_router(counter, sim.urls, picker, setup.per_replica,
                                     setup.prefill_tokens, setup.priority_scheduling)
                          if ours else our_router(counter, sim.urls, picker, 10_000))
                try:
                    ttfts, busiest[name] = await drive_balanced(
                        router_sender(router), jobs, setup.warmup, sim.urls)
                finally:
                    await router.close()
            hits = await hit_rate(sim.urls)
        finally:
            sim.stop()
        line, p95s[name] = summary(name, ttfts, hits, busiest[name], load_average())
        print(line, flush=True)
        lines.append(line)
    if not {"our router", "round robin"} <= set(p95s):
        return  # an exploratory run without the pair: printed, not recorded
    command = setup.command() + ("" if list(routers) == list(ROUTERS) else
                                 f' --only "{",".join(routers)}"')
    ratio_rr = p95s["round robin"] / p95s["our router"]
    ratio_ll = (p95s["litellm least-busy"] / p95s["our router"]
                if "litellm least-busy" in p95s else None)
    table = "\n".join(["| router | requests | errors | TTFT p50 ms | TTFT p95 ms | "
                       "premium p95 ms | standard p95 ms | prefix-cache hits | busiest "
                       "replica ÷ mean requests | load average after (1/5/15 min) |",
                       "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
                       *lines])
    body = (f"4 simulated replicas (max {MAX_NUM_SEQS} sequences each, prefill 0.5 ms/token "
            f"(0.02 for a cached token) one prompt at a time, 20 ms/token decode, "
            f"{OUTPUT_TOKENS} output tokens); {setup.describe_workload()}; tenants `gold` "
            f"(premium) and `std` half each; Poisson arrivals at {rate:.1f} req/s = "
            f"{setup.load:.0%} of the capacity measured just before with round robin "
            f"({capacity:.1f} req/s: a closed loop of {4 * REPLICAS * MAX_NUM_SEQS} callers "
            f"for 15 s), {setup.seconds:.0f} s per router"
            + (f" measured after a {setup.warmup:.0f} s warm-up of the same traffic (not "
               f"counted; hit rates cover both)" if setup.warmup else "")
            + ", each against a fresh simulator. "
            f"Ours: {describe_weights(setup.weights)}, admission limit {setup.per_replica} "
            f"in flight per replica, queued-prefill limit {setup.prefill_tokens or 'off'}"
            + ("; the replicas order their queues by priority (vLLM's `--scheduling-policy "
               "priority`) and ours sends each request's class as its `priority` (round "
               "robin and litellm send none)" if setup.priority_scheduling else "")
            + f"; the `ttft` scorer told the replicas' max-num-seqs ({MAX_NUM_SEQS})"
            + (f"; `{NO_SLOTS}`: the same with it out of reach (no slot model)"
               if NO_SLOTS in p95s else "")
            + (f"; `{OWN_RATES}`: the `ttft` scorer pricing prompt tokens at each "
               f"replica's own learned rate instead of the pool's median" if OWN_RATES in p95s
               else "")
            + (f"; `{NO_RECENT}`: the same without the `recent-requests` scorer"
               if NO_RECENT in p95s else "")
            + f". TTFT measured by the client; balance: each replica's requests taken "
            f"after the warm-up (`vllm:request_success`).\n\n{table}\n\n"
            f"p95 TTFT: round robin / ours = **{ratio_rr:.2f}×**"
            + ("" if ratio_ll is None else
               f", litellm least-busy / ours = **{ratio_ll:.2f}×**") + ".")
    if not setup.shared_docs:
        # No router can make a long prompt's first token come before its own prefill:
        # with ≥ 5% long prompts, that bounds every router's p95 from below.
        floor_s = prefill_s(setup.long_words)
        body += (f" Floor for any router: a long prompt's own prefill, "
                 f"{floor_s * 1000:,.0f} ms (ours is {p95s['our router'] / floor_s:.2f}× it; "
                 f"round robin {p95s['round robin'] / floor_s:.2f}×, so no router could "
                 f"reach more than {p95s['round robin'] / floor_s:.1f}× here).")
    print(f"round robin / ours p95 = {ratio_rr:.2f}x; busiest/mean ours "
          f"{busiest['our router']:.2f}")
    if setup.shared_docs:
        met = ratio_rr >= 2.0 and busiest["our router"] <= 1.1
        body += (f"\n\nGoal ({GOAL}): **{'met' if met else 'not met'}** — "
                 f"{ratio_rr:.2f}× lower p95, busiest replica "
                 f"{busiest['our router']:.2f}× the mean.")
    if not setup.write:
        print(body)
        return
    if setup.shared_docs:
        headline.record("router.mixed_p95_ratio_vs_round_robin", round(ratio_rr, 2),
                        goal=GOAL, command=command)
    record("Routing quality (issue #3) — `bench/routing_quality.py`", command, body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=25.0)
    parser.add_argument("--load", type=float, default=0.85)
    parser.add_argument("--warmup", type=float, default=0.0,
                        help="seconds of the same traffic sent before the measured ones "
                             "(fills the prefix caches)")
    parser.add_argument("--per-replica", type=int, default=16,
                        help="our router's admission limit of requests in flight per replica")
    parser.add_argument("--prefill-tokens", type=int, default=0,
                        help="our router's admission limit of queued prefill tokens per "
                             "replica (0: off)")
    parser.add_argument("--scorers", default="",
                        help="our router's scorer weights as name=w,name=w, over the "
                             "product's defaults (0 turns one off)")
    parser.add_argument("--long-words", type=int, default=LONG_WORDS,
                        help="length of the long prompts (20%% of requests)")
    parser.add_argument("--shared-docs", type=int, default=0,
                        help="long prompts are one of this many shared documents + a "
                             "distinct tail, every prompt opens with a shared system prompt "
                             "(0: every prompt distinct)")
    parser.add_argument("--cache-blocks", type=int, default=2048,
                        help=f"each simulated replica's prefix cache, in blocks of "
                             f"{BLOCK_TOKENS} tokens")
    parser.add_argument("--priority-scheduling", action="store_true",
                        help="replicas order their queues by request priority and our "
                             "router sends the class (premium first)")
    parser.add_argument("--only", default="",
                        help="comma-separated subset of routers to run (recorded when it "
                             "holds 'our router' and 'round robin'); also "
                             f"'{NO_SLOTS}', '{OWN_RATES}', '{NO_RECENT}'")
    parser.add_argument("--no-record", action="store_true",
                        help="print the results only (docs/benchmarks.* untouched)")
    args = parser.parse_args()
    weights = {**DEFAULT_SCORER_WEIGHTS, **(
        {k: float(v) for k, v in (p.split("=") for p in args.scorers.split(","))}
        if args.scorers else {})}
    routers = [r.strip() for r in args.only.split(",")] if args.only else list(ROUTERS)
    unknown = set(routers) - {*ROUTERS, *OURS}
    if unknown:
        parser.error(f"unknown router(s) {sorted(unknown)}; known: {[*ROUTERS, *OURS[1:]]}")
    asyncio.run(main(Setup(args.seconds, args.load, args.per_replica,
                           args.prefill_tokens or None, weights, args.long_words,
                           args.shared_docs, args.cache_blocks, args.priority_scheduling,
                           args.warmup, write=not args.no_record),
                     routers))
