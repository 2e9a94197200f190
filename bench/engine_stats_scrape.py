"""CPU of the router's replica-metrics scraper, before (httpx + prometheus_client's text
parser) and after (aiohttp + pipeline/router/prom_lines.py), side by side in one run.

Each scrape is one GET of a real vLLM /metrics (the shared one at --url) and the parse of
its body into EngineStats. CPU is this process's user + system time (process_time) over
--scrapes scrapes of each way; per second = per scrape x --replicas / --interval-s (the
router's defaults: 4 replicas, every 0.5 s). No headline key of issue 15 names this figure,
so nothing is recorded: it prints. Command:
    .venv/bin/python -m bench.engine_stats_scrape --scrapes 200
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
from prometheus_client.parser import text_string_to_metric_families

from pipeline.router.engine_stats import EngineStats


def full_parser_stats(text: str) -> EngineStats:
    """The scraper's parse before issue 15 (every family of the scrape)."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
    return EngineStats(num_requests_waiting=values.get("vllm:num_requests_waiting", 0.0),
                       num_requests_running=values.get("vllm:num_requests_running", 0.0))


async def cpu_us(scrape: Callable[[], Awaitable[EngineStats]], n: int) -> float:
    await scrape()  # connection and caches warm
    started = time.process_time()
    for _ in range(n):
        await scrape()
    return (time.process_time() - started) / n * 1e6


async def measure(url: str, n: int) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=2.0) as client, aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=2.0)) as session:
        async def before() -> EngineStats:
            response = await client.get(url)
            response.raise_for_status()
            return full_parser_stats(response.text)

        async def after() -> EngineStats:
            async with session.get(url) as response:
                response.raise_for_status()
                body = await response.read()
            return EngineStats.from_vllm_scrape(body.decode("utf-8", errors="replace"))

        async with session.get(url) as response:
            text = await response.text()

        async def parse_before() -> EngineStats:
            return full_parser_stats(text)

        async def parse_after() -> EngineStats:
            return EngineStats.from_vllm_scrape(text)

        return {"before": await cpu_us(before, n), "after": await cpu_us(after, n),
                "parse_before": await cpu_us(parse_before, n),
                "parse_after": await cpu_us(parse_after, n), "body_bytes": len(text)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:18000/metrics")
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--interval-s", type=float, default=0.5)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    figures = asyncio.run(measure(args.url, args.scrapes))
    per_second = args.replicas / args.interval_s
    print(f"body {figures['body_bytes']:.0f} bytes, {args.scrapes} scrapes each way, "
          f"load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}")
    for way in ("before", "after"):
        print(f"{way:>6}: {figures[way]:8.0f} us CPU a scrape (parse alone "
              f"{figures['parse_' + way]:7.0f} us), {figures[way] * per_second / 1e3:6.2f} "
              f"ms CPU a second at {args.replicas} replicas every {args.interval_s} s")
    print(f"ratio: {figures['before'] / figures['after']:.1f}x less CPU a scrape "
          f"(parse {figures['parse_before'] / figures['parse_after']:.0f}x)")


if __name__ == "__main__":
    main()
