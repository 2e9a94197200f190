"""Typed parameters of the scoring plugins, with today's tuned values as defaults.

A plugin factory (registry.py) gets its raw parameters from the configuration
(`ScoringConfig.params[name]`) and validates them into its model here, so a typo or a
value out of range fails when the router is built, not at the first request.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class PluginParams(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NoParams(PluginParams):
    """A plugin without parameters."""


class GaugeParams(PluginParams):
    """A scraped gauge scored `1 − x / (max x + smoothing)`: with 1, 0 vs 1 waiting
    request is half a point, not a whole one."""

    smoothing: float = Field(default=1.0, gt=0)


class InFlightParams(PluginParams):
    """The router's own in-flight requests and tokens, each scored relatively."""

    request_smoothing: float = Field(default=1.0, gt=0)
    token_smoothing: float = Field(default=256.0, gt=0)


class WaitParams(PluginParams):
    """An expected wait in seconds, scored relatively; 50 ms of difference is half a point."""

    smoothing_s: float = Field(default=0.05, gt=0)


class TTFTParams(WaitParams):
    """`ttft`: the wait before prefill (queued prompts), and the wait for a decode slot
    (slots.py). vLLM exports no `--max-num-seqs` in /metrics (`vllm:cache_config_info`
    has only the cache's figures), so the replicas' value is configured here: per
    endpoint URL, else per pool, else `max_num_seqs`."""

    # vLLM's own default for its OpenAI server; set it to the replicas' --max-num-seqs.
    max_num_seqs: int = Field(default=256, ge=1)
    max_num_seqs_by_pool: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    max_num_seqs_by_endpoint: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict)
    # Whose learned seconds per prompt token price the queued work and the prompt's own
    # prefill: "pool" = the median over the candidates (replicas of one pool run the same
    # model on the same hardware; a replica's own estimate drifts up with the traffic it
    # gets, e.g. cached prompts whose blocks it evicted, and that drift alone kept short
    # prompts off it), "replica" = each replica's own (a pool of mixed hardware).
    prefill_rate: Literal["pool", "replica"] = "pool"

    def max_num_seqs_of(self, url: str, pool: str) -> int:
        return self.max_num_seqs_by_endpoint.get(
            url, self.max_num_seqs_by_pool.get(pool, self.max_num_seqs))


class RecentParams(PluginParams):
    """`recent-requests` (balance.py): the requests sent to each replica, decayed with
    `half_life_s`, scored against the spread among the candidates + `smoothing`."""

    half_life_s: float = Field(default=30.0, gt=0)
    smoothing: float = Field(default=4.0, gt=0)


class AffinityParams(PluginParams):
    """Prefix affinity (prefix.py): the consistent-hashing ring with bounded loads and the
    router's memory of which prompt blocks it sent to which replica."""

    # bound = max(ceil((1 + ε) × mean in-flight), min_bound) before a prefix spills
    epsilon: float = Field(default=0.25, ge=0)
    min_bound: int = Field(default=4, ge=1)
    vnodes: int = Field(default=64, ge=1)  # ring points per replica
    recent_ttl_s: float = Field(default=120.0, gt=0)  # how long "served/sent recently" lasts
    recent_capacity: int = Field(default=50_000, ge=1)  # (prefix, replica) pairs remembered
    # ~4 characters per token: 512 characters ≈ one 128-token block of vLLM's CPU cache.
    block_chars: int = Field(default=512, ge=1)
    # Of the first user message the key covers this much: an explain prompt opens with
    # the runbook excerpts of the alert's rule, the alert itself comes after them.
    user_prefix_chars: int = Field(default=1024, ge=0)
    # Score of the hashing target of a prefix no replica served recently (a tie-breaker).
    unseen_score: float = Field(default=0.1, ge=0, le=1)
    # Blocks hashed per prompt (128 KiB of text); a longer prompt is judged by its first.
    max_blocks: int = Field(default=256, ge=1)
    # Blocks remembered per replica (≈ 140 bytes each: 14 MB), more than a KV cache holds.
    blocks_per_replica: int = Field(default=100_000, ge=1)


class ScrapeParams(PluginParams):
    """The background scrape of every replica's /metrics (engine_stats.py)."""

    interval_s: float = Field(default=0.5, gt=0)
    timeout_s: float = Field(default=0.5, gt=0)
    max_age_s: float = Field(default=5.0, gt=0)  # older stats score neutral
    # A replica whose last scrape showed no request waiting, none of another router's
    # and its KV cache under half full is scraped this often instead (engine_stats.py);
    # ≤ interval_s: every interval. Keep it below max_age_s.
    quiet_interval_s: float = Field(default=2.0, ge=0)
    # No pick for this long pauses the scrape until the next pick (None: 2 intervals).
    idle_after_s: float | None = Field(default=None, gt=0)
