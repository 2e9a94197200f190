"""Plugins by name: the names the configuration uses (`ScoringConfig.weights`) → factories.

Like llm-d's plugin factories, a scorer factory takes its raw parameters
(`ScoringConfig.params[name]`, a mapping) and validates them into the plugin's own model
(params.py) before it builds the scorer; no parameter is a constant in the scorer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError

from pipeline.router.scoring.balance import RecentRequestsScorer
from pipeline.router.scoring.base import Filter, Scorer, StatsSource
from pipeline.router.scoring.filters import CircuitClosed, ContextFits, NotExcluded
from pipeline.router.scoring.load import (
    ExpectedTTFTScorer,
    InFlightScorer,
    KVCacheScorer,
    PrefillWaitScorer,
    QueueScorer,
    RunningScorer,
)
from pipeline.router.scoring.params import (
    GaugeParams,
    InFlightParams,
    NoParams,
    PluginParams,
    RecentParams,
    TTFTParams,
    WaitParams,
)
from pipeline.router.scoring.prefix import PrefixAffinity, PrefixAffinityScorer

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ScoringDeps:
    """What a scorer factory may need besides its parameters."""

    stats: StatsSource
    affinity: PrefixAffinity


@dataclass(frozen=True)
class ScorerPlugin:
    """A scorer's parameter model and its factory; `deprecated` says why it is retired
    (it still builds, with a warning, for the benchmarks that compare against it)."""

    params: type[PluginParams]
    build: Callable[[Any, ScoringDeps], Scorer]
    deprecated: str | None = None

    def validate(self, name: str, raw: Mapping[str, Any] | None) -> PluginParams:
        try:
            return self.params.model_validate(dict(raw or {}))
        except ValidationError as exc:
            raise ValueError(f"scorer {name!r}: bad parameters: {exc}") from exc


SCORERS: dict[str, ScorerPlugin] = {
    "queue": ScorerPlugin(GaugeParams, lambda p, deps: QueueScorer(deps.stats, p)),
    "running": ScorerPlugin(GaugeParams, lambda p, deps: RunningScorer(deps.stats, p)),
    "kv-cache": ScorerPlugin(NoParams, lambda p, deps: KVCacheScorer(deps.stats)),
    "in-flight": ScorerPlugin(InFlightParams, lambda p, deps: InFlightScorer(p)),
    "prefill-wait": ScorerPlugin(WaitParams, lambda p, deps: PrefillWaitScorer(p),
                                 deprecated="replaced by 'ttft', which also counts the "
                                            "prompt's cached prefix"),
    "ttft": ScorerPlugin(TTFTParams,
                         lambda p, deps: ExpectedTTFTScorer(deps.affinity, deps.stats, p)),
    "prefix-affinity": ScorerPlugin(NoParams,
                                    lambda p, deps: PrefixAffinityScorer(deps.affinity)),
    "recent-requests": ScorerPlugin(RecentParams, lambda p, deps: RecentRequestsScorer(p)),
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


def build_scorers(weights: Mapping[str, float], deps: ScoringDeps,
                  params: Mapping[str, Mapping[str, Any]] | None = None,
                  ) -> list[tuple[str, float, Scorer]]:
    """(name, weight, scorer) for every scorer with a non-zero weight. Every parameter
    set given is validated, even that of a scorer switched off (a typo fails here)."""
    params = params or {}
    for name in [*weights, *params]:
        if name not in SCORERS:
            raise UnknownPlugin("scorer", name, list(SCORERS))
    validated = {name: SCORERS[name].validate(name, params.get(name))
                 for name in {*weights, *params}}
    out = []
    for name, weight in weights.items():
        if weight < 0:
            raise ValueError(f"scorer {name!r} has a negative weight {weight}")
        if weight == 0:
            continue
        plugin = SCORERS[name]
        if plugin.deprecated:
            log.warning("deprecated_scorer", scorer=name, why=plugin.deprecated)
        out.append((name, weight, plugin.build(validated[name], deps)))
    return out


def build_filters(names: tuple[str, ...] = DEFAULT_FILTERS) -> list[Filter]:
    for name in names:
        if name not in FILTERS:
            raise UnknownPlugin("filter", name, list(FILTERS))
    return [FILTERS[name]() for name in names]
