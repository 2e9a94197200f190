"""Prometheus metrics of the router, fed by one wrapper around the usage sink.

Every request the router finishes or refuses yields exactly one final UsageEvent, so
observing the events (`MeteredUsageSink`) counts requests, tokens, TTFT and rejections
without touching the router's flow. Refusals (not dispatched) are counted here only: the
usage table holds no row for them. Queue wait and replica scores are not in the event: the
admission queue and the scorers call `observe_queue_wait` and `set_replica_score`.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from pipeline.router.progress import ProgressSink
from pipeline.router.usage import BatchingUsageWriter, ReservingUsageSink, UsageSink
from schemas.usage import UsageEvent

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                    60.0, 120.0)


class RouterMetrics:
    """The router's metric families, registered once in one registry."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.requests = Counter(
            "secanalyst_llm_requests", "LLM requests by outcome.",
            ["tenant", "model", "pool", "status"], registry=registry)
        self.tokens = Counter(
            "secanalyst_llm_tokens", "Tokens processed for dispatched LLM requests, as "
            "charged (kind: input|output).",
            ["tenant", "model", "pool", "kind"], registry=registry)
        self.ttft = Histogram(
            "secanalyst_llm_ttft_seconds", "Time to first token, as the router measured it.",
            ["model", "pool"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.latency = Histogram(
            "secanalyst_llm_request_seconds", "Total latency of successful LLM requests.",
            ["model", "pool"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.queue_wait = Histogram(
            "secanalyst_llm_queue_wait_seconds", "Time spent in the router's admission queue.",
            ["priority", "outcome"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.rejections = Counter(
            "secanalyst_llm_rejections", "Requests refused, by reason.",
            ["reason"], registry=registry)
        self.replica_score = Gauge(
            "secanalyst_llm_replica_score", "Latest score of a replica, by scorer "
            "(scorer=\"total\" for the weighted sum).",
            ["pool", "replica", "scorer"], registry=registry)
        self.replicas = Gauge(
            "secanalyst_llm_replicas", "Replicas of a pool by state (routed: gets "
            "requests; joining: discovered, /health not passed yet; draining: gone from "
            "discovery, requests still running). A static pool: its configured replicas, "
            "routed.",
            ["pool", "state"], registry=registry)

        self.router_peers = Gauge(
            "secanalyst_llm_router_peers", "Router processes sharing the replicas (their "
            "heartbeats in Redis, pipeline/router/peers.py): each applies 1/this of the "
            "admission limits.", registry=registry)

        self.usage_writers = UsageWriterCollector()
        registry.register(self.usage_writers)

    def observe_event(self, event: UsageEvent) -> None:
        status = str(event.status_code)
        self.requests.labels(event.tenant_id, event.model_name, event.pool, status).inc()
        if not event.dispatched:
            self.rejections.labels(event.error_kind or status).inc()
            return
        self.tokens.labels(event.tenant_id, event.model_name, event.pool,
                           "input").inc(event.input_tokens)
        self.tokens.labels(event.tenant_id, event.model_name, event.pool,
                           "output").inc(event.output_tokens)
        if event.status_code == 200:
            if event.ttft_ms is not None:
                self.ttft.labels(event.model_name, event.pool).observe(event.ttft_ms / 1000)
            if event.total_latency_ms is not None:
                self.latency.labels(event.model_name, event.pool).observe(
                    event.total_latency_ms / 1000)


@functools.cache  # a second set would register the same names twice: an error
def router_metrics() -> RouterMetrics:
    """The process-wide metrics in prometheus-client's default registry (created once)."""
    return RouterMetrics()


def observe_queue_wait(seconds: float, *, priority: str, outcome: str = "admitted") -> None:
    """Called by the admission queue when a request leaves it (outcome: admitted|expired|
    full)."""
    router_metrics().queue_wait.labels(priority, outcome).observe(seconds)


def set_replica_score(pool: str, replica: str, scorer: str, score: float) -> None:
    """Called by the replica chooser with each scorer's score (and the weighted total)."""
    router_metrics().replica_score.labels(pool, replica, scorer).set(score)


def set_replica_counts(pool: str, *, routed: int, joining: int, draining: int) -> None:
    """Called by a pool's membership (discovery) after each refresh, and once for a
    static pool when the router is built."""
    gauge = router_metrics().replicas
    for state, count in (("routed", routed), ("joining", joining), ("draining", draining)):
        gauge.labels(pool, state).set(count)


def set_router_peers(routers: int) -> None:
    """Called with each heartbeat's count of the routers sharing the replicas."""
    router_metrics().router_peers.set(routers)


def count_rejection(reason: str) -> None:
    """A refusal that never reached the router (e.g. the gateway's unauthorized)."""
    router_metrics().rejections.labels(reason).inc()


class UsageWriterCollector(Collector):
    """The usage writers' buffers, read at scrape time (nothing per event): events
    queued or being written, reservations that waited for room (back-pressure while
    PostgreSQL is slow), events dropped (0 unless writes kept failing)."""

    def __init__(self) -> None:
        self._writers: weakref.WeakSet[BatchingUsageWriter] = weakref.WeakSet()

    def watch(self, writer: BatchingUsageWriter) -> None:
        self._writers.add(writer)

    def collect(self) -> Iterator[Metric]:
        writers = list(self._writers)
        yield GaugeMetricFamily(
            "secanalyst_usage_buffer_events", "Usage events queued or being written.",
            value=sum(w.depth for w in writers))
        yield CounterMetricFamily(
            "secanalyst_usage_backpressure_waits", "Reservations that waited for room "
            "in the usage buffer before their request was sent.",
            value=sum(w.backpressure_waits for w in writers))
        yield CounterMetricFamily(
            "secanalyst_usage_events_dropped", "Usage events dropped (writes that "
            "kept failing, or the hard limit of the buffer).",
            value=sum(w.dropped for w in writers))


class MeteredUsageSink:
    """A UsageSink that updates the metrics from every event, then passes it on."""

    def __init__(self, inner: UsageSink, metrics: RouterMetrics | None = None) -> None:
        self._inner = inner
        self._metrics = metrics or router_metrics()
        if isinstance(inner, BatchingUsageWriter):
            self._metrics.usage_writers.watch(inner)
        # Checked once, not per request (isinstance of a runtime Protocol is slow).
        self._reserving = inner if isinstance(inner, ReservingUsageSink) else None
        self._progress = inner if isinstance(inner, ProgressSink) else None

    def record(self, event: UsageEvent) -> None:
        self._metrics.observe_event(event)
        self._inner.record(event)

    async def reserve(self, event: UsageEvent) -> None:
        """Passed on (not observed: the final event of the request will be)."""
        if self._reserving is not None:
            await self._reserving.reserve(event)

    def progress(self, event: UsageEvent) -> None:
        """Passed on (not observed: running counts of a request the final event settles)."""
        if self._progress is not None:
            self._progress.progress(event)
