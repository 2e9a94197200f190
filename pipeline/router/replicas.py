"""Replicas of a pool: health by circuit breaker, load by the router's own in-flight count
(fresher than any scraped gauge), choice by least load."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.router.errors import ContextTooLong, NoHealthyReplica
from pipeline.router.prefill import PrefillModel
from pipeline.router.slots import DecodeSlots


@dataclass
class CircuitBreaker:
    """Opens after `threshold` consecutive failures; half-opens after `cooldown_s`."""

    threshold: int = 3
    cooldown_s: float = 10.0
    failures: int = 0
    opened_at: float | None = None

    def allows(self, now: float) -> bool:
        return self.opened_at is None or now - self.opened_at >= self.cooldown_s

    def success(self) -> None:
        self.failures = 0
        self.opened_at = None

    def failure(self, now: float) -> None:
        self.failures += 1
        if self.failures >= self.threshold:
            self.opened_at = now


@dataclass
class Replica:
    url: str
    pool: str
    model_name: str | None = None  # the model version it serves (None: the router's)
    circuit: CircuitBreaker = field(default_factory=CircuitBreaker)
    in_flight_requests: int = 0
    in_flight_tokens: int = 0
    # The prefill work queued ahead of a new request, in tokens and as a time.
    prefill: PrefillModel = field(default_factory=PrefillModel)
    # How long its decode slots (vLLM max-num-seqs) take to free one (slots.py).
    slots: DecodeSlots = field(default_factory=DecodeSlots)

    @property
    def pending_prefill_tokens(self) -> int:
        """Prompt tokens of this router's requests sent here and not yet past their
        first token."""
        return self.prefill.queued_tokens


@dataclass
class Pool:
    name: str
    max_context_tokens: int
    replicas: list[Replica]
    priority_scheduling: bool = False  # the replicas order their queues by `priority`
    # Model version → share of requests (rollout.py); empty: no versioning.
    traffic_split: dict[str, float] = field(default_factory=dict)
    sticky_versions: bool = False  # a tenant's requests all to one version


def choose_pool(pools: Sequence[Pool], tokens: int) -> Pool:
    """The first pool (in configured order) whose context fits the request."""
    for pool in pools:
        if tokens <= pool.max_context_tokens:
            return pool
    raise ContextTooLong(tokens, max(p.max_context_tokens for p in pools))


def choose_replica(pool: Pool, *, exclude: set[str]) -> Replica:
    now = time.monotonic()
    candidates = [r for r in pool.replicas if r.url not in exclude and r.circuit.allows(now)]
    if not candidates:
        raise NoHealthyReplica(f"no healthy replica left in pool {pool.name!r}")
    return min(candidates, key=lambda r: (r.in_flight_requests, r.in_flight_tokens))
