"""Router metrics from usage events, the streaming helper and the dispatch span."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from pipeline.router import ChatRequest, Completion, QuotaExceeded
from pipeline.router.dispatch import DeltaCallback
from pipeline.router.metrics import MeteredUsageSink, RouterMetrics
from pipeline.router.streaming import stream_completion
from pipeline.router.tracing import dispatch_span
from schemas.usage import UsageEvent


def event(status: int, kind: str | None = None, dispatched: bool = True) -> UsageEvent:
    return UsageEvent(tenant_id="acme", model_name="m", pool="default", replica="r",
                      request_id="x", input_tokens=100, output_tokens=20, ttft_ms=150,
                      total_latency_ms=900, status_code=status, error_kind=kind,
                      dispatched=dispatched)


class ListSink:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> None:
        self.events.append(event)


def test_metered_sink_counts_every_event_and_passes_it_on() -> None:
    registry = CollectorRegistry()
    inner = ListSink()
    sink = MeteredUsageSink(inner, RouterMetrics(registry))
    for e in (event(200), event(200), event(429, "quota_exceeded", dispatched=False),
              event(503, "saturated", dispatched=False), event(502, "upstream_error")):
        sink.record(e)
    assert len(inner.events) == 5

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    base = {"tenant": "acme", "model": "m", "pool": "default"}
    assert value("secanalyst_llm_requests_total", **base, status="200") == 2
    assert value("secanalyst_llm_requests_total", **base, status="429") == 1
    # tokens for every request a replica processed (a failed one too), none for refusals
    assert value("secanalyst_llm_tokens_total", **base, kind="input") == 300
    assert value("secanalyst_llm_tokens_total", **base, kind="output") == 60
    assert value("secanalyst_llm_ttft_seconds_count", model="m", pool="default") == 2
    assert value("secanalyst_llm_ttft_seconds_sum", model="m", pool="default") == \
        pytest.approx(0.3)
    assert value("secanalyst_llm_rejections_total", reason="quota_exceeded") == 1
    assert value("secanalyst_llm_rejections_total", reason="saturated") == 1
    assert value("secanalyst_llm_rejections_total", reason="upstream_error") is None


def test_queue_wait_and_replica_score_families() -> None:
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    metrics.queue_wait.labels("premium", "admitted").observe(0.02)
    metrics.replica_score.labels("default", "http://a/v1", "queue").set(0.75)
    assert registry.get_sample_value("secanalyst_llm_queue_wait_seconds_count",
                                     {"priority": "premium", "outcome": "admitted"}) == 1
    assert registry.get_sample_value("secanalyst_llm_replica_score",
                                     {"pool": "default", "replica": "http://a/v1",
                                      "scorer": "queue"}) == 0.75


REQUEST = ChatRequest(tenant_id="acme", messages=[{"role": "user", "content": "hi"}],
                      max_tokens=4)
DONE = Completion(request_id="r", text="abc", input_tokens=3, output_tokens=3,
                  estimated_input_tokens=3, ttft_ms=1, latency_ms=2, pool="default",
                  replica="r", finish_reason="stop")


async def test_stream_yields_pieces_then_the_completion() -> None:
    async def complete(request: ChatRequest, *,
                       on_delta: DeltaCallback | None = None) -> Completion:
        assert on_delta is not None
        for piece in "abc":
            on_delta(piece)
            await asyncio.sleep(0)
        return DONE

    items = [item async for item in stream_completion(complete, REQUEST)]
    assert items == ["a", "b", "c", DONE]


async def test_stream_raises_a_refusal_on_first_read() -> None:
    async def complete(request: ChatRequest, *,
                       on_delta: DeltaCallback | None = None) -> Completion:
        raise QuotaExceeded("acme", 3.0)

    with pytest.raises(QuotaExceeded):
        await anext(stream_completion(complete, REQUEST))


async def test_closing_the_stream_early_cancels_the_request() -> None:
    cancelled = asyncio.Event()

    async def complete(request: ChatRequest, *,
                       on_delta: DeltaCallback | None = None) -> Completion:
        assert on_delta is not None
        on_delta("a")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return DONE

    stream = stream_completion(complete, REQUEST)
    assert await anext(stream) == "a"
    await stream.aclose()  # type: ignore[attr-defined]
    assert cancelled.is_set()


class TestDispatchSpan:
    exporter: ClassVar[InMemorySpanExporter] = InMemorySpanExporter()

    @classmethod
    def setup_class(cls) -> None:
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(cls.exporter))
        trace.set_tracer_provider(provider)

    def test_span_carries_routing_attributes_and_errors(self) -> None:
        with dispatch_span(model="m", pool="default", replica="http://a/v1", tenant="acme",
                           request_id="r1", attempt=1):
            pass
        with pytest.raises(ConnectionError), dispatch_span(
                model="m", pool="default", replica="http://b/v1", tenant="acme",
                request_id="r1", attempt=2):
            raise ConnectionError("refused")
        spans = self.exporter.get_finished_spans()
        ok, failed = spans[-2], spans[-1]
        assert ok.name == "llm.dispatch" and ok.attributes is not None
        assert ok.attributes["secanalyst.replica"] == "http://a/v1"
        assert ok.attributes["gen_ai.request.model"] == "m"
        assert failed.status.status_code == trace.StatusCode.ERROR
        assert failed.events[0].name == "exception"
