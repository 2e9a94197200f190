"""Balance of request counts: how many requests the router sent each replica recently.

The load scorers see the moment (in-flight requests, queued prefill, scraped gauges); at
low concurrency most replicas are idle at that moment and those scorers tie, so the
choice among them is a coin toss and the counts drift apart like a random walk (four
replicas with ~90 requests each: the busiest ≈ 1.09× the mean by chance alone). A
decayed count of recent picks breaks such near-ties towards the replica that got fewest,
as round robin would, without outweighing a real difference in expected TTFT.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipeline.router.replicas import Replica
from pipeline.router.scoring.base import PickContext
from pipeline.router.scoring.params import RecentParams


class RecentRequests:
    """Per replica URL, the requests sent there, decayed with a half-life."""

    def __init__(self, half_life_s: float = RecentParams().half_life_s) -> None:
        self._rate = math.log(2) / half_life_s
        self._counts: dict[str, tuple[float, float]] = {}  # url → (count, as of)

    def count(self, url: str, now: float) -> float:
        count, at = self._counts.get(url, (0.0, now))
        return count * math.exp(-self._rate * max(0.0, now - at))

    def picked(self, url: str, now: float) -> None:
        self._counts[url] = (self.count(url, now) + 1.0, now)



class RecentRequestsScorer:
    """`1 − (x_i − min x) / (max x − min x + smoothing)` of the decayed counts: 1 for the
    replica that got fewest, down to ≈ 0 for the one that got most when the spread is
    large against `smoothing` (a spread of a request or two scores little). The picker
    tells it each choice (`picked`)."""

    def __init__(self, params: RecentParams | None = None) -> None:
        params = params or RecentParams()
        self._recent = RecentRequests(params.half_life_s)
        self._smoothing = params.smoothing

    def picked(self, url: str, now: float) -> None:
        self._recent.picked(url, now)

    def score(self, replicas: Sequence[Replica], ctx: PickContext) -> Sequence[float]:
        counts = [self._recent.count(r.url, ctx.now) for r in replicas]
        low, high = min(counts, default=0.0), max(counts, default=0.0)
        spread = high - low + self._smoothing
        return [1.0 - (c - low) / spread for c in counts]
