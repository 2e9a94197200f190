import asyncio
import itertools
import time

import pytest
from aiohttp import web

from pipeline.router.engine_stats import EngineStats, EngineStatsScraper, metrics_url

SCRAPE = """\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="m"} 3.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 5.0
vllm:num_requests_running{engine="1",model_name="m"} 2.0
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 640.0
vllm:prefix_cache_hits_created{engine="0",model_name="m"} 1.7e9
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1280.0
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 99.0
"""


def test_parses_vllm_names_and_sums_label_sets() -> None:
    stats = EngineStats.from_vllm_scrape(SCRAPE, scraped_at=12.5)
    assert stats.num_requests_waiting == 3
    assert stats.num_requests_running == 7  # two engines
    assert stats.kv_cache_usage_perc == 0.25
    assert (stats.prefix_cache_hits, stats.prefix_cache_queries) == (640, 1280)
    assert stats.prefix_cache_hit_rate == 0.5
    assert stats.scraped_at == 12.5 and not stats.stale


def test_counters_without_total_suffix_and_missing_metrics() -> None:
    text = ("# TYPE vllm:prefix_cache_hits gauge\nvllm:prefix_cache_hits 4\n"
            "# TYPE vllm:prefix_cache_queries gauge\nvllm:prefix_cache_queries 8\n")
    stats = EngineStats.from_vllm_scrape(text)
    assert (stats.prefix_cache_hits, stats.prefix_cache_queries) == (4, 8)
    assert stats.num_requests_waiting == 0 and stats.kv_cache_usage_perc == 0
    assert EngineStats.from_vllm_scrape("").prefix_cache_hit_rate is None


def test_garbage_raises_value_error() -> None:
    with pytest.raises(ValueError):
        EngineStats.from_vllm_scrape("vllm:num_requests_waiting{ not prometheus")


def test_metrics_url_is_at_the_server_root() -> None:
    assert metrics_url("http://gpu-1:8000/v1") == "http://gpu-1:8000/metrics"
    assert metrics_url("http://gpu-1:8000/v1/") == "http://gpu-1:8000/metrics"
    assert metrics_url("http://gpu-1:8000") == "http://gpu-1:8000/metrics"


async def test_failed_scrape_marks_stats_stale_without_raising() -> None:
    scraper = EngineStatsScraper(["http://127.0.0.1:1/v1"], timeout_s=0.2)
    try:
        await scraper.scrape_once()
    finally:
        await scraper.close()
    assert scraper.get("http://127.0.0.1:1/v1") is None
    latest = scraper.latest("http://127.0.0.1:1/v1")
    assert latest is not None and latest.stale


def test_old_stats_are_not_served() -> None:
    scraper = EngineStatsScraper(["http://a/v1"], max_age_s=2.0)
    scraper._latest["http://a/v1"] = EngineStats(num_requests_waiting=1, scraped_at=100.0)
    assert scraper.get("http://a/v1", now=101.0) is not None
    assert scraper.get("http://a/v1", now=103.0) is None


async def test_failed_scrape_logs_a_non_empty_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refused connection's str() is empty; the log line must still say what failed."""
    import pipeline.router.engine_stats as engine_stats
    from tests.log_recorder import LogRecorder

    # The module's logger, not structlog's capture_logs: a logger cached by an earlier
    # test's logging setup is out of capture_logs' reach (tests/log_recorder.py).
    recorder = LogRecorder()
    monkeypatch.setattr(engine_stats, "log", recorder)
    scraper = EngineStatsScraper(["http://127.0.0.1:1/v1"], timeout_s=0.2)
    try:
        await scraper.scrape_once()
    finally:
        await scraper.close()
    failures = [e for e in recorder.events if e["event"] == "engine_stats_scrape_failed"]
    assert len(failures) == 1
    assert "Error" in failures[0]["error"]  # the exception's type, e.g. ConnectError(...)


def test_a_real_vllm_scrape_gives_prometheus_client_sums() -> None:
    from pathlib import Path

    from prometheus_client.parser import text_string_to_metric_families

    text = (Path(__file__).parents[1] / "data" / "vllm-metrics.txt").read_text()
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    stats = EngineStats.from_vllm_scrape(text)
    assert stats.num_requests_running == sums["vllm:num_requests_running"]
    assert stats.num_requests_waiting == sums["vllm:num_requests_waiting"]
    assert stats.kv_cache_usage_perc == sums["vllm:kv_cache_usage_perc"]
    assert stats.prefix_cache_hits == sums["vllm:prefix_cache_hits_total"] > 0
    assert stats.prefix_cache_queries == sums["vllm:prefix_cache_queries_total"] > 0


def test_two_models_of_a_rollout_are_summed() -> None:
    text = ('vllm:num_requests_running{engine="0",model_name="old"} 2.0\n'
            'vllm:num_requests_running{engine="0",model_name="new"} 1.0\n'
            'vllm:num_requests_waiting{engine="0",model_name="new"} 4.0 1733112000000\n')
    stats = EngineStats.from_vllm_scrape(text)
    assert (stats.num_requests_running, stats.num_requests_waiting) == (3.0, 4.0)


class _MetricsServer:
    """Replicas' /metrics on one local aiohttp server (paths /r0/metrics, …): the time
    of every scrape, by replica."""

    def __init__(self) -> None:
        self.hits: dict[str, list[float]] = {}

    async def start(self, replicas: int) -> list[str]:
        async def metrics(request: web.Request) -> web.Response:
            name = request.match_info["name"]
            self.hits.setdefault(name, []).append(asyncio.get_running_loop().time())
            return web.Response(text=SCRAPE)

        app = web.Application()
        app.router.add_get("/{name}/metrics", metrics)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return [f"http://127.0.0.1:{port}/r{i}/v1" for i in range(replicas)]

    async def stop(self) -> None:
        await self._runner.cleanup()


async def test_a_round_spreads_its_scrapes_over_the_interval() -> None:
    """Not all replicas at once: each scrape is a burst of event-loop CPU, and a request
    arriving during several in a row waited for all of them."""
    server = _MetricsServer()
    urls = await server.start(4)
    scraper = EngineStatsScraper(urls, timeout_s=2.0)
    try:
        await scraper.scrape_once(spread_s=0.4)
    finally:
        await scraper.close()
        await server.stop()
    starts = sorted(times[0] for times in server.hits.values())
    assert len(starts) == 4 and all(scraper.get(u) is not None for u in urls)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(0.07 <= gap <= 0.3 for gap in gaps), gaps


async def test_scraping_pauses_without_picks_and_resumes_with_the_next() -> None:
    server = _MetricsServer()
    [url] = await server.start(1)
    scraper = EngineStatsScraper([url], interval_s=0.05, idle_after_s=0.2, timeout_s=2.0)
    try:
        scraper.wanted(time.monotonic())
        scraper.start()
        await asyncio.sleep(0.5)  # ~0.2 s of picks' worth of rounds, then idle
        scraped_while_wanted = len(server.hits["r0"])
        await asyncio.sleep(0.5)
        assert len(server.hits["r0"]) == scraped_while_wanted  # idle: no scrape at all
        assert 3 <= scraped_while_wanted <= 8
        scraper.wanted(time.monotonic())  # a pick: rounds again, the first at once
        await asyncio.sleep(0.03)
        assert len(server.hits["r0"]) == scraped_while_wanted + 1
    finally:
        await scraper.close()
        await server.stop()


def test_a_quiet_replica_is_scraped_less_often_until_it_is_not() -> None:
    """Stats showing nothing the router does not know (nothing waiting, no other router's
    request, KV cache under half) put a replica on the slow interval; anything else, no
    stats, stale stats or an unknown own count keep it in every round."""
    from dataclasses import replace

    urls = ["http://quiet/v1", "http://waiting/v1", "http://others/v1", "http://full/v1",
            "http://stale/v1", "http://unknown/v1", "http://new/v1"]
    scraper = EngineStatsScraper(urls, interval_s=0.5, quiet_interval_s=2.0)
    quiet = EngineStats(num_requests_running=3, kv_cache_usage_perc=0.2, scraped_at=100.0,
                        own_in_flight=3)
    scraper._latest.update({
        "http://quiet/v1": quiet,
        "http://waiting/v1": replace(quiet, num_requests_waiting=1),
        "http://others/v1": replace(quiet, own_in_flight=2),
        "http://full/v1": replace(quiet, kv_cache_usage_perc=0.6),
        "http://stale/v1": replace(quiet, stale=True),
        "http://unknown/v1": replace(quiet, own_in_flight=None)})
    assert scraper.due(100.5) == urls[1:]
    assert scraper.due(101.0) == urls[1:]
    assert scraper.due(101.75) == urls  # 2 s less half a round's slack
    assert EngineStatsScraper(urls, interval_s=0.5).due(100.5) == urls  # off by default
