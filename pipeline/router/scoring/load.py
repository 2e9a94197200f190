"""Load scorers. Each returns one score in [0, 1] per candidate, higher = less loaded.

Relative form for counts: score = 1 − x / (max(x over candidates) + s), with a smoothing
`s` (a field of the scorer's parameters, params.py) so that 0 vs 1 waiting is a
half-point, not a full one. Missing or stale engine stats
score 0.5 (neutral): the circuit breaker, not a scorer, deals with a dead replica.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from pipeline.router.engine_stats import EngineStats
from pipeline.router.replicas import Replica
from pipeline.router.scoring.base import PickContext, StatsSource
from pipeline.router.scoring.params import GaugeParams, InFlightParams, TTFTParams, WaitParams
from pipeline.router.scoring.prefix import PrefixAffinity

NEUTRAL = 0.5


def relative(values: Sequence[float], smoothing: float) -> list[float]:
    top = max(values, default=0.0) + smoothing
    return [1.0 - v / top for v in values]


class _GaugeScorer:
    """Relative score of one scraped gauge; neutral where stats are missing."""

    def __init__(self, stats: StatsSource, gauge: Callable[[EngineStats], float],
                 params: GaugeParams | None) -> None:
        self._stats = stats
        self._gauge = gauge
        self._smoothing = (params or GaugeParams()).smoothing

    def score(self, replicas: Sequence[Replica], ctx: PickContext) -> Sequence[float]:
        found = [self._stats.get(r.url, ctx.now) for r in replicas]
        known = [self._gauge(s) for s in found if s is not None]
        scored = iter(relative(known, self._smoothing))
        return [NEUTRAL if s is None else next(scored) for s in found]


class QueueScorer(_GaugeScorer):
    """vllm:num_requests_waiting."""

    def __init__(self, stats: StatsSource, params: GaugeParams | None = None) -> None:
        super().__init__(stats, lambda s: s.num_requests_waiting, params)


class RunningScorer(_GaugeScorer):
    """vllm:num_requests_running."""

    def __init__(self, stats: StatsSource, params: GaugeParams | None = None) -> None:
        super().__init__(stats, lambda s: s.num_requests_running, params)


class KVCacheScorer:
    """1 − vllm:kv_cache_usage_perc (already a fraction of the replica's cache)."""

    def __init__(self, stats: StatsSource) -> None:
        self._stats = stats

    def score(self, replicas: Sequence[Replica], ctx: PickContext) -> Sequence[float]:
        out = []
        for replica in replicas:
            stats = self._stats.get(replica.url, ctx.now)
            out.append(NEUTRAL if stats is None else 1.0 - stats.kv_cache_usage_perc)
        return out


class InFlightScorer:
    """The router's own in-flight requests and tokens, updated at dispatch and completion
    (fresher than any scrape): the mean of the relative scores of the two."""

    def __init__(self, params: InFlightParams | None = None) -> None:
        self._params = params or InFlightParams()

    def score(self, replicas: Sequence[Replica], ctx: PickContext) -> Sequence[float]:
        requests = relative([r.in_flight_requests for r in replicas],
                            self._params.request_smoothing)
        tokens = relative([r.in_flight_tokens for r in replicas], self._params.token_smoothing)
        return [(a + b) / 2 for a, b in zip(requests, tokens, strict=True)]


class PrefillWaitScorer:
    """Deprecated (replaced by `ttft`; kept for bench/prefix_affinity.py's comparison).
    The expected wait before a new prompt starts prefilling on each replica
    (`Replica.prefill.expected_wait`, pipeline/router/prefill.py: queued prompt tokens ×
    the replica's learned seconds per token, running down with the clock). Unlike
    counting tokens it sees that a long prompt sent a while ago is nearly done."""

    def __init__(self, params: WaitParams | None = None) -> None:
        self._smoothing_s = (params or WaitParams()).smoothing_s

    def score(self, replicas: Sequence[Replica], ctx: PickContext) -> Sequence[float]:
        return relative([r.prefill.expected_wait(ctx.now) for r in replicas],
                        self._smoothing_s)


class ExpectedTTFTScorer:
    """The expected time to first token on each replica: the wait before its prefill can
    start + the prompt's own prefill there, counting only the tokens that replica's
    prefix cache is not expected to hold (`PrefixAffinity.cached_fraction`: the leading
    blocks of the prompt the router sent there recently) × its learned seconds per token.
    The wait is the longer of two: the queued prefill (as `prefill-wait`) and, when the
    replica's decode slots are all held (vLLM max-num-seqs), the time until one frees
    (`Replica.slots`, pipeline/router/slots.py). Scored relative to the best candidate,
    so a prompt the cache spares on one replica goes there unless the others would
    start it that much sooner."""

    def __init__(self, affinity: PrefixAffinity, stats: StatsSource | None = None,
                 params: TTFTParams | None = None) -> None:
        self._affinity = affinity
        self._stats = stats
        self._params = params or TTFTParams()

    def occupied(self, replica: Replica, now: float) -> float:
        """Requests on the replica: the router's own (exact, fresh) + other routers' as
        of the last scrape (its running + waiting minus the router's own then). A scrape
        that does not say how many were the router's own: the larger of the two."""
        stats = None if self._stats is None else self._stats.get(replica.url, now)
        own = float(replica.in_flight_requests)
        if stats is None:
            return own
        if stats.own_in_flight is None:
            return max(own, stats.requests)
        return own + stats.others()

    def wait(self, replica: Replica, now: float, seconds_per_token: float | None = None,
             ) -> float:
        """The longer of the queued prefill (rescaled to `seconds_per_token` when given:
        the same queued tokens at the pool's rate) and the wait for a decode slot."""
        slots = self._params.max_num_seqs_of(replica.url, replica.pool)
        slot_wait = replica.slots.expected_wait(self.occupied(replica, now), slots)
        prefill_wait = replica.prefill.expected_wait(now)
        if seconds_per_token is not None:
            prefill_wait *= seconds_per_token / replica.prefill.seconds_per_token
        return max(prefill_wait, slot_wait)

    def rates(self, replicas: Sequence[Replica]) -> list[float]:
        """Seconds per prompt token of each candidate: its own, or the pool's median."""
        own = [r.prefill.seconds_per_token for r in replicas]
        if self._params.prefill_rate == "replica" or not own:
            return own
        return [statistics.median(own)] * len(own)

    def score(self, replicas: Sequence[Replica], ctx: PickContext) -> Sequence[float]:
        tokens = ctx.prompt_tokens or ctx.needed_tokens
        pooled = self._params.prefill_rate == "pool"
        ttfts = []
        for replica, rate in zip(replicas, self.rates(replicas), strict=True):
            cached = self._affinity.cached_fraction(ctx.blocks, replica.url, ctx.now)
            ttfts.append(self.wait(replica, ctx.now, rate if pooled else None)
                         + tokens * (1.0 - cached) * rate)
        best = min(ttfts, default=0.0)
        return relative([t - best for t in ttfts], self._params.smoothing_s)
