"""The one place where secanalyst's settings become the router's own configuration
(pipeline/router/config.py): the router library never reads `Settings` itself."""

from __future__ import annotations

from pydantic import ValidationError

from pipeline.config import LLMPool, Settings
from pipeline.router import config as router
from pipeline.router.scoring.params import ScrapeParams


def router_config(settings: Settings) -> router.RouterConfig:
    llm = settings.llm
    scoring = router.ScoringConfig(params=llm.scorer_params,
                                   scrape=ScrapeParams(interval_s=llm.metrics_scrape_interval_s))
    if llm.scorers is not None:  # else the router's tuned defaults
        scoring = scoring.model_copy(update={"weights": dict(llm.scorers)})
    return router.RouterConfig(
        model_name=llm.model_name,
        pools={name: pool_config(name, pool) for name, pool in settings.llm_pools.items()},
        # The settings' tenant models have the router's fields (and more).
        tenants=router.TenantLimits.model_validate(
            settings.tenants.model_dump(exclude={"default_tenant"})),
        admission=router.AdmissionConfig(
            max_in_flight_per_replica=llm.max_in_flight_per_replica,
            max_queue=llm.admission_queue_size, max_wait_s=llm.max_queue_wait_s,
            max_prefill_tokens_per_replica=llm.max_prefill_tokens_per_replica),
        quota=router.QuotaBackend(redis_url=settings.redis_url),
        scoring=scoring,
        connect_timeout_s=llm.connect_timeout_s,
        request_timeout_s=llm.request_timeout_s)


def pool_config(name: str, pool: LLMPool) -> router.PoolConfig:
    """A settings pool as the router's `PoolConfig`, which checks the router's options the
    settings carry through (discovery, rollout…). A bad one is raised as an error of the
    settings at `llm.pools.<name>`, so the CLI names the setting to fix."""
    try:
        return router.PoolConfig.model_validate(pool.model_dump())
    except ValidationError as exc:
        raise ValidationError.from_exception_data("Settings", [
            {"type": error["type"], "loc": ("llm", "pools", name, *error["loc"]),
             "input": error["input"], "ctx": error.get("ctx", {})}
            for error in exc.errors()]) from exc
