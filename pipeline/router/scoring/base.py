"""The two plugin shapes of replica choice: a Filter keeps or drops one replica, a Scorer
scores every candidate in [0, 1] (higher is better). Both see one `PickContext`."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pipeline.router.engine_stats import EngineStats
from pipeline.router.replicas import Replica


@dataclass(frozen=True)
class PickContext:
    needed_tokens: int  # prompt + max output tokens
    max_context_tokens: int  # of the pool
    exclude: Collection[str]  # replica URLs already tried for this request
    prefix_key: int | None  # hash of the request's block-aligned prefix, if any
    now: float  # time.monotonic()
    prompt_tokens: int = 0  # the exact count (0: unknown, e.g. in a unit test)
    blocks: tuple[int, ...] = ()  # chained hashes of the prompt's blocks (prefix.py)


class Filter(Protocol):
    def keep(self, replica: Replica, ctx: PickContext) -> bool: ...


class Scorer(Protocol):
    def score(self, replicas: Sequence[Replica], ctx: PickContext) -> Sequence[float]: ...


@runtime_checkable
class PickObserver(Protocol):
    """A scorer that keeps state of its own hears of every choice (balance.py)."""

    def picked(self, url: str, now: float) -> None: ...


class StatsSource(Protocol):
    """Where scorers read the latest fresh engine stats (the scraper; a dict in tests)."""

    def get(self, base_url: str, now: float | None = None) -> EngineStats | None: ...


class NoStats:
    def get(self, base_url: str, now: float | None = None) -> EngineStats | None:
        return None
