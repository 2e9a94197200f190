"""The one place where secanalyst's settings become the router's own configuration
(pipeline/router/config.py): the router library never reads `Settings` itself."""

from __future__ import annotations

from pipeline.config import Settings
from pipeline.router.config import (
    AdmissionConfig,
    PoolConfig,
    QuotaBackend,
    RouterConfig,
    ScoringConfig,
    TenantLimits,
)
from pipeline.router.scoring.params import ScrapeParams


def router_config(settings: Settings) -> RouterConfig:
    llm = settings.llm
    scoring = ScoringConfig(params=llm.scorer_params,
                            scrape=ScrapeParams(interval_s=llm.metrics_scrape_interval_s))
    if llm.scorers is not None:  # else the router's tuned defaults
        scoring = scoring.model_copy(update={"weights": dict(llm.scorers)})
    return RouterConfig(
        model_name=llm.model_name,
        # The settings' pool and tenant models have the router's fields (and more).
        pools={name: PoolConfig.model_validate(pool.model_dump())
               for name, pool in settings.llm_pools.items()},
        tenants=TenantLimits.model_validate(
            settings.tenants.model_dump(exclude={"default_tenant"})),
        admission=AdmissionConfig(
            max_in_flight_per_replica=llm.max_in_flight_per_replica,
            max_queue=llm.admission_queue_size, max_wait_s=llm.max_queue_wait_s,
            max_prefill_tokens_per_replica=llm.max_prefill_tokens_per_replica),
        quota=QuotaBackend(redis_url=settings.redis_url),
        scoring=scoring,
        connect_timeout_s=llm.connect_timeout_s,
        request_timeout_s=llm.request_timeout_s)
