"""The runner: filters, then weighted scorers, then the best total.

Each scorer's scores are clamped to [0, 1]; a candidate's total is Σ weight × score; the
highest total wins, ties broken at random (seedable) so that equal replicas share load.
"""

from __future__ import annotations

import random
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.router.engine_stats import EngineStatsScraper
from pipeline.router.errors import NoHealthyReplica
from pipeline.router.replicas import Pool, Replica
from pipeline.router.scoring.base import (
    Filter,
    NoStats,
    PickContext,
    PickObserver,
    Scorer,
    StatsSource,
)
from pipeline.router.scoring.params import AffinityParams, ScrapeParams
from pipeline.router.scoring.prefix import PrefixAffinity
from pipeline.router.scoring.registry import (
    DEFAULT_FILTERS,
    ScoringDeps,
    build_filters,
    build_scorers,
)
from pipeline.router.tokens import Message


def _clamp(value: float) -> float:
    return 0.0 if value < 0.0 else 1.0 if value > 1.0 else value


@dataclass(frozen=True)
class Choice:
    replica: Replica
    # The prompt tokens the replica is expected to prefill: those its prefix cache will
    # not spare, as far as the router knows what it sent there recently.
    uncached_tokens: int


class ReplicaPicker:
    def __init__(self, weights: Mapping[str, float], *,
                 stats: StatsSource | None = None,
                 affinity: PrefixAffinity | None = None,
                 filters: Sequence[str] = DEFAULT_FILTERS,
                 params: Mapping[str, Mapping[str, Any]] | None = None,
                 rng: random.Random | None = None) -> None:
        self._stats = stats if stats is not None else NoStats()
        self.affinity = affinity if affinity is not None else PrefixAffinity()
        self._filters: list[Filter] = build_filters(tuple(filters))
        self._scorers: list[tuple[str, float, Scorer]] = build_scorers(
            weights, ScoringDeps(stats=self._stats, affinity=self.affinity), params)
        self._observers: list[PickObserver] = [
            s for _, _, s in self._scorers if isinstance(s, PickObserver)]  # once, not per pick
        self._wants_prefix = any(name == "prefix-affinity" for name, _, _ in self._scorers)
        self._rng = rng if rng is not None else random.Random()
        # The pools picked in, by name: the scraper reads their replicas' in-flight counts.
        self._pools: dict[str, Pool] = {}
        if isinstance(self._stats, EngineStatsScraper):
            self._stats.own_in_flight = self._own_in_flight
        # The totals of the latest choice, by replica URL (for metrics and debugging).
        self.last_scores: dict[str, float] = {}

    @property
    def scorer_names(self) -> list[str]:
        return [name for name, _, _ in self._scorers]

    def pick(self, pool: Pool, *, needed_tokens: int, messages: Sequence[Message] = (),
             exclude: Collection[str] = ()) -> Replica:
        return self.choose(pool, needed_tokens=needed_tokens, messages=messages,
                           exclude=exclude).replica

    def choose(self, pool: Pool, *, needed_tokens: int, prompt_tokens: int = 0,
               messages: Sequence[Message] = (), exclude: Collection[str] = ()) -> Choice:
        now = time.monotonic()
        self._ensure_scraping(now)
        self._pools[pool.name] = pool
        blocks = self.affinity.blocks(messages) if messages else ()
        key = self.affinity.key(messages, blocks) if self._wants_prefix else None
        ctx = PickContext(needed_tokens=needed_tokens, max_context_tokens=pool.max_context_tokens,
                          exclude=exclude, now=now, prefix_key=key,
                          prompt_tokens=prompt_tokens, blocks=blocks)
        candidates = [r for r in pool.replicas if all(f.keep(r, ctx) for f in self._filters)]
        if not candidates:
            raise NoHealthyReplica(f"no healthy replica left in pool {pool.name!r}")
        chosen = candidates[0]
        if len(candidates) > 1:
            chosen = self._best(candidates, ctx)
        cached = self.affinity.cached_fraction(blocks, chosen.url, now)
        self.affinity.served(ctx.prefix_key, chosen.url, now)
        self.affinity.sent_blocks(blocks, chosen.url, now)
        for observer in self._observers:
            observer.picked(chosen.url, now)
        return Choice(chosen, max(1, round(prompt_tokens * (1.0 - cached))))

    def _own_in_flight(self, url: str) -> float | None:
        """This router's requests in flight on a replica URL (in every pool that has it);
        None before any pick (the scrape then cannot tell its own from others')."""
        if not self._pools:
            return None
        return float(sum(r.in_flight_requests for p in self._pools.values()
                         for r in p.replicas if r.url == url))

    def _best(self, candidates: list[Replica], ctx: PickContext) -> Replica:
        totals = [0.0] * len(candidates)
        for _, weight, scorer in self._scorers:
            for i, value in enumerate(scorer.score(candidates, ctx)):
                totals[i] += weight * _clamp(value)
        self.last_scores = {r.url: t for r, t in zip(candidates, totals, strict=True)}
        top = max(totals)
        best = [r for r, t in zip(candidates, totals, strict=True) if t >= top - 1e-9]
        return best[0] if len(best) == 1 else self._rng.choice(best)

    def _ensure_scraping(self, now: float) -> None:
        """The scraper starts with the first pick, i.e. inside the router's event loop;
        it scrapes while picks come (it pauses when they stop: engine_stats.py)."""
        if isinstance(self._stats, EngineStatsScraper):
            self._stats.wanted(now)
            if not self._stats.started:
                self._stats.start()

    def track(self, base_urls: Collection[str]) -> None:
        """The replicas now in the pools (they come and go: membership.py): scrape those."""
        if isinstance(self._stats, EngineStatsScraper):
            self._stats.track(base_urls)

    async def close(self) -> None:
        if isinstance(self._stats, EngineStatsScraper):
            await self._stats.close()


def build_picker(weights: Mapping[str, float], base_urls: Collection[str], *,
                 params: Mapping[str, Mapping[str, Any]] | None = None,
                 affinity: AffinityParams | None = None,
                 scrape: ScrapeParams | None = None) -> ReplicaPicker:
    """The picker the router uses: the given scorer weights and parameters, and a scraper
    of every replica's /metrics that starts with the first pick."""
    scrape = scrape if scrape is not None else ScrapeParams()
    stats = EngineStatsScraper(base_urls, interval_s=scrape.interval_s,
                               timeout_s=scrape.timeout_s, max_age_s=scrape.max_age_s,
                               idle_after_s=scrape.idle_after_s,
                               quiet_interval_s=scrape.quiet_interval_s)
    return ReplicaPicker(weights, stats=stats, params=params, affinity=PrefixAffinity(affinity))
