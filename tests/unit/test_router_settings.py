"""The router as secanalyst configures it: `Settings` → the router's own configuration
(pipeline/router_settings.py, the one place that mapping lives) → a built router, and the
router with the served model's tokenizer. The router's own tests (test_router_*.py,
test_scoring.py, test_quota*.py, …) import nothing of `pipeline` outside pipeline/router."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.cli.entry import as_config_error
from pipeline.config import LLMPool, LLMSettings, Settings, TenantDefaults, TenantQuota
from pipeline.router.build import build_router
from pipeline.router.config import DEFAULT_SCORER_WEIGHTS, PoolConfig, TenantLimits
from pipeline.router.quota import MemoryQuotaStore, RedisQuotaStore
from pipeline.router.router import smallest_request_tokens
from pipeline.router.tokens import counter_for
from pipeline.router_settings import router_config
from pipeline.runtime import tokenizer_dir
from schemas.usage import UsageEvent


class FixedCounter:
    def count_chat(self, messages: object) -> int:
        return 5


class NoSink:
    def record(self, event: UsageEvent) -> None:
        raise AssertionError("nothing is sent in these tests")


def test_defaults_map_onto_the_embedded_pool_and_the_tuned_scorers() -> None:
    settings = Settings()
    config = router_config(settings)
    assert config.model_name == settings.llm.model_name
    assert config.pools == {"default": PoolConfig(
        endpoints=[f"http://127.0.0.1:{settings.dev.vllm_port}/v1"],
        max_context_tokens=settings.dev.vllm_max_model_len, priority_scheduling=True)}
    assert config.scoring.weights == DEFAULT_SCORER_WEIGHTS
    assert config.scoring.scrape.interval_s == settings.llm.metrics_scrape_interval_s
    assert config.quota.redis_url is None
    assert (config.connect_timeout_s, config.request_timeout_s) == (5.0, 120.0)
    assert config.tenants == TenantLimits()


def test_every_router_setting_is_carried_over() -> None:
    llm = LLMSettings(
        model_name="m", connect_timeout_s=2, request_timeout_s=9,
        pools={"short": LLMPool(endpoints=["http://a/v1", "http://b/v1"]),
               "long": LLMPool.model_validate({  # the router's options carried through
                   "endpoints": ["http://vllm.ns.svc:8000/v1"], "discovery": "dns",
                   "refresh_s": 2, "max_context_tokens": 32768})},
        scorers={"queue": 1.0, "ttft": 0.0}, scorer_params={"queue": {"smoothing": 2.0}},
        metrics_scrape_interval_s=1.5, max_in_flight_per_replica=3, admission_queue_size=7,
        max_queue_wait_s=4, max_prefill_tokens_per_replica=512)
    tenants = TenantDefaults(default_tenant="acme", tokens_per_minute=10, tokens_per_day=100,
                             overrides={"vip": TenantQuota(priority="premium",
                                                           tokens_per_day=500)})
    config = router_config(Settings(llm=llm, tenants=tenants, redis_url="redis://r:6379/0"))
    assert list(config.pools) == ["short", "long"]  # the order pools are tried in
    assert config.pools["long"] == PoolConfig(
        endpoints=["http://vllm.ns.svc:8000/v1"], discovery="dns", refresh_s=2,
        max_context_tokens=32768)
    assert config.tenants.model_dump() == {
        "tokens_per_minute": 10, "tokens_per_day": 100, "overrides": {
            "vip": {"tokens_per_minute": None, "tokens_per_day": 500, "priority": "premium"}}}
    assert config.admission.model_dump() == {
        "max_in_flight_per_replica": 3, "max_queue": 7, "max_wait_s": 4.0,
        "max_prefill_tokens_per_replica": 512, "split_between_routers": True,
        "peers_heartbeat_s": 5.0}
    assert config.scoring.weights == {"queue": 1.0, "ttft": 0.0}
    assert config.scoring.params == {"queue": {"smoothing": 2.0}}
    assert config.scoring.scrape.interval_s == 1.5
    assert config.quota.redis_url == "redis://r:6379/0"
    assert (config.connect_timeout_s, config.request_timeout_s) == (2.0, 9.0)


async def test_the_built_router_has_what_the_settings_say() -> None:
    llm = LLMSettings(pools={"default": LLMPool(endpoints=["http://a/v1"])},
                      scorers={"queue": 1.0, "in-flight": 2.0})
    router = build_router(router_config(Settings(llm=llm)), FixedCounter(),  # type: ignore[arg-type]
                          NoSink())
    try:
        assert router._picker.scorer_names == ["queue", "in-flight"]
        assert isinstance(router._quota, MemoryQuotaStore)
        assert router._peers is None  # memory quotas: one process, all the limits
    finally:
        await router.close()
    shared = build_router(router_config(Settings(llm=llm, redis_url="redis://127.0.0.1:1/0")),
                          FixedCounter(), NoSink())  # type: ignore[arg-type]
    assert isinstance(shared._quota, RedisQuotaStore)
    assert shared._peers is not None  # quotas in Redis: routers count each other there
    await shared.close()


def test_a_bad_scorer_parameter_stops_the_build() -> None:
    llm = LLMSettings(pools={"default": LLMPool(endpoints=["http://a/v1"])},
                      scorer_params={"ttft": {"smoothing": 0.1}})  # ttft's is smoothing_s
    with pytest.raises(ValueError, match="'ttft'"):
        build_router(router_config(Settings(llm=llm)), FixedCounter(),  # type: ignore[arg-type]
                     NoSink())


@pytest.mark.parametrize(("option", "setting", "problem"), [
    ({"refesh_s": 2}, "SECANALYST_LLM__POOLS__P__REFESH_S", "is not a setting"),
    ({"discovery": "k8s"}, "SECANALYST_LLM__POOLS__P__DISCOVERY", "'static' or 'dns'"),
    ({"endpoints": ["http://a/v1", "http://b/v1"], "discovery": "dns"},
     "SECANALYST_LLM__POOLS__P", "exactly one endpoint"),
])
def test_a_bad_router_option_of_a_pool_names_the_setting(
        option: dict[str, object], setting: str, problem: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings carry a pool's router options through; the router's PoolConfig checks
    them, and the error names the setting as the settings' own errors do."""
    monkeypatch.delenv("SECANALYST_CONFIG_FILE", raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no ./secanalyst.toml: the environment's name
    pool = LLMPool.model_validate({"endpoints": ["http://a/v1"], **option})
    with pytest.raises(ValidationError) as raised:
        router_config(Settings(llm=LLMSettings(pools={"p": pool})))
    error = as_config_error(raised.value)
    assert error is not None
    assert str(error).startswith(setting) and problem in str(error), str(error)


def test_the_smallest_request_is_the_shortest_single_message_the_template_renders() -> None:
    counter = counter_for(tokenizer_dir(Settings()))
    floor = smallest_request_tokens(counter)
    # SmolLM2's template adds a default system prompt to a chat without one, so a lone
    # empty user message is not the smallest request: a lone system message is.
    lone_user = counter.count_chat([{"role": "user", "content": ""}])
    assert floor == counter.count_chat([{"role": "system", "content": ""}]) < lone_user
    for chat in ([{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}],
                 [{"role": "user", "content": "\n\n"}], [{"role": "assistant", "content": ""}]):
        assert counter.count_chat(chat) + 1 >= floor  # + at least one output token
