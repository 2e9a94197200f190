"""What each vLLM replica says about its own load, scraped from its `/metrics`.

`EngineStats.from_vllm_scrape` turns one Prometheus exposition into a typed object; the
`EngineStatsScraper` keeps the latest one per replica, refreshed in the background. A failed
scrape marks that replica's stats stale; nothing here ever blocks a request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import aiohttp
import structlog

from pipeline.router.prom_lines import samples
from pipeline.router.tasks import cancel_and_wait

log = structlog.get_logger(__name__)

# vLLM 0.32 names; counters are also accepted without their `_total` suffix.
_GAUGES = {
    "vllm:num_requests_waiting": "num_requests_waiting",
    "vllm:num_requests_running": "num_requests_running",
    "vllm:kv_cache_usage_perc": "kv_cache_usage_perc",
}
_COUNTERS = {
    "vllm:prefix_cache_hits": "prefix_cache_hits",
    "vllm:prefix_cache_queries": "prefix_cache_queries",
}
_FIELDS = {**_GAUGES, **_COUNTERS, **{f"{name}_total": field for name, field in _COUNTERS.items()}}


@dataclass(frozen=True)
class EngineStats:
    num_requests_waiting: float = 0.0
    num_requests_running: float = 0.0
    kv_cache_usage_perc: float = 0.0  # 0..1
    prefix_cache_hits: float = 0.0  # tokens, cumulative
    prefix_cache_queries: float = 0.0  # tokens, cumulative
    scraped_at: float = 0.0  # time.monotonic() of the scrape
    stale: bool = False  # the latest scrape failed; these are older figures
    # This router's own requests in flight there when the scrape came back (None: not
    # known): running + waiting minus these are other routers' requests.
    own_in_flight: float | None = None

    @property
    def requests(self) -> float:
        """Requests on the replica, running or waiting."""
        return self.num_requests_running + self.num_requests_waiting

    def others(self) -> float:
        """Requests on the replica that are not this router's (0 when that is unknown:
        all of them are counted as its own)."""
        if self.own_in_flight is None:
            return 0.0
        return max(0.0, self.requests - self.own_in_flight)

    @classmethod
    def from_vllm_scrape(cls, text: str, *, scraped_at: float | None = None) -> EngineStats:
        """Sum each metric over its label sets (one per model / engine)."""
        values: dict[str, float] = {}
        # Only these few lines are parsed: the full text parser cost ~11 ms a scrape.
        for sample in samples(text, _FIELDS):
            field = _FIELDS[sample.name]
            values[field] = values.get(field, 0.0) + sample.value
        return cls(num_requests_waiting=values.get("num_requests_waiting", 0.0),
                   num_requests_running=values.get("num_requests_running", 0.0),
                   kv_cache_usage_perc=values.get("kv_cache_usage_perc", 0.0),
                   prefix_cache_hits=values.get("prefix_cache_hits", 0.0),
                   prefix_cache_queries=values.get("prefix_cache_queries", 0.0),
                   scraped_at=time.monotonic() if scraped_at is None else scraped_at)

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        if self.prefix_cache_queries <= 0:
            return None
        return self.prefix_cache_hits / self.prefix_cache_queries


def metrics_url(base_url: str) -> str:
    """`http://host:8000/v1` → `http://host:8000/metrics` (metrics live at the root)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    return f"{root}/metrics"


class EngineStatsScraper:
    """Scrapes every replica's `/metrics` every `interval_s` (each with a short timeout)
    and keeps the latest stats per replica base URL.

    The scrapes of one round are spread over the interval, not started together: a
    scrape costs the event loop ~0.5 ms of CPU, and four at once held up a request that
    came meanwhile by ~2 ms — at 20 req/s that was the router's p99. Nobody asking
    (`wanted`, called by the picker at every pick) for `idle_after_s` stops the rounds
    until the next pick: an idle router does not wake up for stats nobody reads.

    `own_in_flight` (URL → this router's requests in flight there), when set, is read as
    each scrape comes back, so a scorer can tell other routers' requests (in the scrape)
    from its own (fresh between scrapes, not counted twice).

    A replica whose latest scrape showed nothing the router does not know already — no
    request waiting, none but its own, its KV cache under half full — is scraped only
    every `quiet_interval_s` (< `max_age_s`: its stats stay fresh) until a scrape shows
    otherwise: one router alone on unloaded replicas (the router's own requests are
    counted fresh by the scorers) does not pay a scrape of each every `interval_s` —
    ~0.5 ms of CPU each, 4 replicas every 0.5 s was ~7 % of the router's Python work at
    20 explain streams a second (py-spy, bench/router_overhead.py)."""

    def __init__(self, base_urls: Iterable[str], *, interval_s: float = 0.5,
                 timeout_s: float = 0.5, max_age_s: float = 5.0,
                 idle_after_s: float | None = None,
                 quiet_interval_s: float | None = None) -> None:
        self._urls = list(dict.fromkeys(base_urls))
        self._interval_s = interval_s
        # None or ≤ interval_s: every replica every round.
        self._quiet_interval_s = max(interval_s, quiet_interval_s or interval_s)
        # Stats then are at most idle_after_s + interval_s old when picks resume (still
        # fresh: below max_age_s), and the first round after resumes at once.
        self._idle_after_s = idle_after_s if idle_after_s is not None else 2 * interval_s
        self._wanted_at = 0.0  # time.monotonic() of the latest pick
        self._waking: asyncio.Future[None] | None = None  # set while the rounds sleep
        self._timeout_s = timeout_s
        self._max_age_s = max_age_s
        self._latest: dict[str, EngineStats] = {}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self.own_in_flight: Callable[[str], float | None] = lambda url: None

    @property
    def started(self) -> bool:
        return self._task is not None

    def get(self, base_url: str, now: float | None = None) -> EngineStats | None:
        """The latest fresh stats of a replica, or None (never scraped, stale or too old)."""
        stats = self._latest.get(base_url)
        if stats is None or stats.stale:
            return None
        now = time.monotonic() if now is None else now
        return stats if now - stats.scraped_at <= self._max_age_s else None

    def latest(self, base_url: str) -> EngineStats | None:
        """The latest stats whatever their age (for reports)."""
        return self._latest.get(base_url)

    def track(self, base_urls: Iterable[str]) -> None:
        """Scrape these replicas from the next round on; forget the stats of the others."""
        self._urls = list(dict.fromkeys(base_urls))
        for url in set(self._latest) - set(self._urls):
            del self._latest[url]

    def start(self) -> None:
        """Start the background task; call from inside the event loop."""
        if self._task is None:
            self._wanted_at = max(self._wanted_at, time.monotonic())  # a round at once
            self._task = asyncio.create_task(self._run(), name="engine-stats-scraper")

    def wanted(self, now: float) -> None:
        """A pick read the stats (cheap: called for every request)."""
        self._wanted_at = now
        if self._waking is not None and not self._waking.done():
            self._waking.set_result(None)

    async def scrape_once(self, spread_s: float = 0.0) -> None:
        """One round: every replica once, the starts spread evenly over `spread_s`."""
        urls = list(self._urls)
        step = spread_s / len(urls) if urls else 0.0
        await asyncio.gather(*(self._scrape(url, i * step) for i, url in enumerate(urls)))

    def _open(self) -> aiohttp.ClientSession:
        """The session, made on first use inside the event loop. aiohttp, as dispatch.py:
        an httpx GET of a vLLM /metrics cost ~3x its CPU (1.4 ms against 0.45 ms)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._timeout_s),
                connector=aiohttp.TCPConnector(limit_per_host=2))
        return self._session

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if time.monotonic() - self._wanted_at > self._idle_after_s:
                self._waking = loop.create_future()
                try:
                    await self._waking  # until the next pick
                finally:
                    self._waking = None
            started = loop.time()
            due = self.due(time.monotonic())
            step = self._interval_s / len(due) if due else 0.0
            await asyncio.gather(*(self._scrape(url, i * step) for i, url in enumerate(due)))
            await asyncio.sleep(max(0.0, started + self._interval_s - loop.time()))

    def due(self, now: float) -> list[str]:
        """The replicas to scrape in a round starting now: all but the quiet ones scraped
        less than `quiet_interval_s` ago (a round's slack: half an interval)."""
        wait = self._quiet_interval_s - self._interval_s / 2
        return [url for url in self._urls
                if (stats := self._latest.get(url)) is None or not _quiet(stats)
                or now - stats.scraped_at >= wait]

    async def _scrape(self, base_url: str, after_s: float = 0.0) -> None:
        if after_s > 0:
            await asyncio.sleep(after_s)
        try:
            async with self._open().get(metrics_url(base_url)) as response:
                response.raise_for_status()
                body = await response.read()
            text = body.decode("utf-8", errors="replace")
            self._latest[base_url] = replace(EngineStats.from_vllm_scrape(text),
                                             own_in_flight=self.own_in_flight(base_url))
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            previous = self._latest.get(base_url)
            if previous is None or not previous.stale:
                # str() of a connect error is often empty: repr names the type.
                log.warning("engine_stats_scrape_failed", replica=base_url, error=repr(exc))
            self._latest[base_url] = replace(previous or EngineStats(scraped_at=0.0),
                                             stale=True)


def _quiet(stats: EngineStats) -> bool:
    """Nothing in these stats that the router does not know itself: no request waiting,
    none of another router's, the KV cache under half full (not stale)."""
    return (not stats.stale and stats.own_in_flight is not None and stats.others() == 0
            and stats.num_requests_waiting == 0 and stats.kv_cache_usage_perc < 0.5)
