"""The router against the real vLLM: exact token counts and a usage event per request."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import pytest
import pytest_asyncio

from pipeline.config import Settings
from pipeline.router import ChatRequest, ContextTooLong, Router
from pipeline.router.tokens import counter_for
from pipeline.router_settings import router_config
from pipeline.runtime import tokenizer_dir
from schemas.usage import UsageEvent
from tests.integration.test_usage_metering import cancel_after

pytestmark = pytest.mark.integration

PROMPTS = [
    "Hi",
    "Explain SSH brute force in one sentence.",
    "Ünïcödé alert: user 'рoot' from 192.0.2.1 — 失败 ✓ <script>alert(1)</script>",
    "Summarise: " + "Failed password for invalid user admin from 203.0.113.9 port 22 ssh2\n" * 20,
    '{"rule": {"id": "5712", "level": 10}, "data": {"srcip": "198.51.100.4"}}',
]


class ListSink:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> None:
        self.events.append(event)


@pytest_asyncio.fixture(scope="module")
async def router_and_sink(settings: Settings) -> AsyncIterator[tuple[Router, ListSink]]:
    sink = ListSink()
    router = Router(model_name=settings.llm.model_name, pools=router_config(settings).pools,
                    counter=counter_for(tokenizer_dir(settings)), usage=sink)
    yield router, sink
    await router.close()  # its HTTP sessions


async def test_token_estimate_equals_vllm_prompt_tokens(
        router_and_sink: tuple[Router, ListSink]) -> None:
    router, sink = router_and_sink
    mismatches: list[tuple[int, int]] = []
    for prompt in PROMPTS:
        messages: Sequence[dict[str, str]] = [
            {"role": "system", "content": "You are terse."}, {"role": "user", "content": prompt}]
        completion = await router.complete(ChatRequest(
            tenant_id="t-router", messages=list(messages), max_tokens=8))
        if completion.estimated_input_tokens != completion.input_tokens:
            mismatches.append((completion.estimated_input_tokens, completion.input_tokens))
        assert completion.text and completion.output_tokens > 0
        assert completion.ttft_ms is not None and completion.latency_ms >= completion.ttft_ms
    assert mismatches == []
    assert len(sink.events) == len(PROMPTS)
    assert all(e.status_code == 200 and e.output_tokens > 0 for e in sink.events)


async def test_prompt_longer_than_every_pool_is_refused_before_dispatch(
        router_and_sink: tuple[Router, ListSink]) -> None:
    router, sink = router_and_sink
    before = len(sink.events)
    huge = "alert " * 6000
    with pytest.raises(ContextTooLong) as caught:
        await router.complete(ChatRequest(tenant_id="t-router",
                                          messages=[{"role": "user", "content": huge}],
                                          max_tokens=16))
    assert caught.value.tokens > caught.value.limit
    assert sink.events[before].status_code == 413
    assert sink.events[before].error_kind == "context_too_long"


async def test_every_class_is_sent_as_vllm_priority_and_served(settings: Settings) -> None:
    """The embedded vLLM runs `--scheduling-policy priority` and its pool says so: each
    request carries its class as `priority`, which a server without that policy would
    refuse with a 400 for any class but premium."""
    from pipeline.router.config import TenantLimits, TenantQuota

    assert all(pool.priority_scheduling for pool in settings.llm_pools.values())
    sink = ListSink()
    router = Router(model_name=settings.llm.model_name, pools=router_config(settings).pools,
                    counter=counter_for(tokenizer_dir(settings)), usage=sink,
                    tenants=TenantLimits(overrides={"t-gold": TenantQuota(priority="premium")}))
    try:
        for tenant, requested in (("t-gold", "standard"), ("t-std", "standard"),
                                  ("t-std", "batch")):
            completion = await router.complete(ChatRequest(
                tenant_id=tenant, priority=requested, max_tokens=4,
                messages=[{"role": "user", "content": "Say OK."}]))
            assert completion.output_tokens > 0
    finally:
        await router.close()
    assert [e.priority for e in sink.events] == ["premium", "standard", "batch"]
    assert all(e.status_code == 200 for e in sink.events)


async def test_a_call_cut_mid_stream_is_charged_what_vllm_processed(
        settings: Settings) -> None:
    """vLLM's own running counts (`continuous_usage_stats`) meter a call its caller
    cancels mid-stream: the prompt as vLLM counted it and the output streamed so far."""
    sink = ListSink()
    router = Router(model_name=settings.llm.model_name, pools=router_config(settings).pools,
                    counter=counter_for(tokenizer_dir(settings)), usage=sink)
    request = ChatRequest(tenant_id="t-cut", max_tokens=200, messages=[
        {"role": "user", "content": "Write a long story about a cat who audits logs."}])
    try:
        pieces = await cancel_after(router, request, pieces=5)
    finally:
        await router.close()
    [event] = sink.events
    assert (event.status_code, event.error_kind) == (499, "client_disconnect")
    assert event.input_tokens == router.estimate(request)[0]  # vLLM's count, and ours
    assert len(pieces) <= event.output_tokens < 200
