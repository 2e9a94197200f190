"""The replica-metrics scraper against the real embedded vLLM (started by the session)."""

from pipeline.config import Settings
from pipeline.router.engine_stats import EngineStatsScraper


async def test_scrapes_the_embedded_vllm(settings: Settings) -> None:
    url = next(iter(settings.llm_pools.values())).endpoints[0]
    scraper = EngineStatsScraper([url], timeout_s=5.0)
    try:
        await scraper.scrape_once()
    finally:
        await scraper.close()
    stats = scraper.get(url)
    assert stats is not None and stats.prefix_cache_queries > 0
