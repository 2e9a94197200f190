"""Plugins by name: the names the settings use (`llm.scorers`) → factories."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pipeline.router.scoring.base import Filter, Scorer, StatsSource
from pipeline.router.scoring.filters import CircuitClosed, ContextFits, NotExcluded
from pipeline.router.scoring.load import (
    ExpectedTTFTScorer,
    InFlightScorer,
    KVCacheScorer,
    PrefillQueueScorer,
    PrefillWaitScorer,
    QueueScorer,
    RunningScorer,
)
from pipeline.router.scoring.prefix import PrefixAffinity, PrefixAffinityScorer


@dataclass(frozen=True)
class ScoringDeps:
    """What a scorer factory may need."""

    stats: StatsSource
    affinity: PrefixAffinity


ScorerFactory = Callable[[ScoringDeps], Scorer]

SCORERS: dict[str, ScorerFactory] = {
    "queue": lambda deps: QueueScorer(deps.stats),
    "running": lambda deps: RunningScorer(deps.stats),
    "kv-cache": lambda deps: KVCacheScorer(deps.stats),
    "in-flight": lambda deps: InFlightScorer(),
    "prefill-queue": lambda deps: PrefillQueueScorer(),
    "prefill-wait": lambda deps: PrefillWaitScorer(),
    "ttft": lambda deps: ExpectedTTFTScorer(deps.affinity),
    "prefix-affinity": lambda deps: PrefixAffinityScorer(deps.affinity),
}

FILTERS: dict[str, Callable[[], Filter]] = {
    "circuit-closed": CircuitClosed,
    "context-fits": ContextFits,
    "not-excluded": NotExcluded,
}

DEFAULT_FILTERS = ("not-excluded", "circuit-closed", "context-fits")


class UnknownPlugin(ValueError):
    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(sorted(known))}")
        self.name = name


def build_scorers(weights: dict[str, float], deps: ScoringDeps) -> list[tuple[str, float, Scorer]]:
    """(name, weight, scorer) for every scorer with a non-zero weight."""
    out = []
    for name, weight in weights.items():
        if name not in SCORERS:
            raise UnknownPlugin("scorer", name, list(SCORERS))
        if weight < 0:
            raise ValueError(f"scorer {name!r} has a negative weight {weight}")
        if weight > 0:
            out.append((name, weight, SCORERS[name](deps)))
    return out


def build_filters(names: tuple[str, ...] = DEFAULT_FILTERS) -> list[Filter]:
    for name in names:
        if name not in FILTERS:
            raise UnknownPlugin("filter", name, list(FILTERS))
    return [FILTERS[name]() for name in names]
