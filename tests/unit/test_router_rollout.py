"""The version draw of a model rollout (pipeline/router/rollout.py) and its split checks."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from pydantic import ValidationError

from pipeline.router.config import PoolConfig
from pipeline.router.replicas import Pool, Replica
from pipeline.router.rollout import checked_split, other_versions, versions_to_try


def test_versions_are_drawn_by_weight_with_the_others_as_fallbacks() -> None:
    rng = random.Random(7)
    draws = [versions_to_try({"v1": 90, "v2": 10, "v3": 0}, rng) for _ in range(5000)]
    firsts = Counter(d[0] for d in draws)
    assert 4350 <= firsts["v1"] <= 4650, firsts  # 90 % ± ~6 standard deviations
    assert set(firsts) == {"v1", "v2"}  # weight 0: never drawn
    assert all(d in (["v1", "v2"], ["v2", "v1"]) for d in draws)  # never v3, even as fallback
    assert versions_to_try({}, rng) == []


def test_a_replica_is_excluded_unless_it_serves_the_version() -> None:
    pool = Pool("p", 4096, [Replica("http://a/v1", "p", model_name="v2"),
                            Replica("http://b/v1", "p"),  # the router's default model
                            Replica("http://c/v1", "p", model_name="v1")])
    assert other_versions(pool, "v1", default="v1") == {"http://a/v1"}
    assert other_versions(pool, "v2", default="v1") == {"http://b/v1", "http://c/v1"}


@pytest.mark.parametrize("weights", [{"v1": -1, "v2": 5}, {"v1": 0, "v2": 0}])
def test_a_split_without_a_positive_weight_or_with_a_negative_one_is_refused(
        weights: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="weight"):
        checked_split(weights)
    with pytest.raises(ValidationError, match="traffic_split"):
        PoolConfig(endpoints=["http://a/v1"], traffic_split=weights)


def test_models_must_name_configured_endpoints() -> None:
    with pytest.raises(ValidationError, match="not in endpoints"):
        PoolConfig(endpoints=["http://a/v1"], models={"http://b/v1": "v2"})
    assert checked_split({}) == {}  # no versioning


def test_the_settings_pool_carries_its_versions_to_the_router() -> None:
    from pipeline.config import LLMPool, LLMSettings, Settings
    from pipeline.router_settings import router_config

    pool = LLMPool.model_validate({  # as the settings load it (router options carried)
        "endpoints": ["http://a/v1", "http://b/v1"], "models": {"http://b/v1": "v2"},
        "traffic_split": {"v1": 90, "v2": 10}, "sticky_versions": True})
    config = router_config(Settings(llm=LLMSettings(model_name="v1", pools={"p": pool})))
    assert config.pools["p"].models == {"http://b/v1": "v2"}
    assert config.pools["p"].traffic_split == {"v1": 90.0, "v2": 10.0}
    assert config.pools["p"].sticky_versions


def test_sticky_versions_keep_a_tenant_on_one_version_as_its_share_grows() -> None:
    rng = random.Random(3)
    tenants = [f"tenant-{n}" for n in range(2000)]

    def version_of(tenant: str, v2: float) -> str:
        return versions_to_try({"v1": 100 - v2, "v2": v2}, rng, sticky_key=tenant)[0]

    at_10 = {t for t in tenants if version_of(t, 10) == "v2"}
    at_50 = {t for t in tenants if version_of(t, 50) == "v2"}
    assert 130 <= len(at_10) <= 270, len(at_10)  # ~10 % of the tenants
    assert 850 <= len(at_50) <= 1150, len(at_50)
    assert at_10 <= at_50  # nobody moved back to v1 while v2 grew
    assert all(version_of("tenant-7", 50) == version_of("tenant-7", 50) for _ in range(20))
    assert {version_of(t, 100) for t in tenants} == {"v2"}
    assert {version_of(t, 0) for t in tenants} == {"v1"}
