"""OpenTelemetry traces across the topic hops (the API only; a process that wants traces
configures an SDK tracer provider).

The W3C trace context travels in Kafka headers (`traceparent`, `tracestate`). The batch
runner (pipeline/kafka/messaging.py `run_batch`) opens one span per record, named after the
stage, whose parent is the context in the record's headers; `headers_for` (pipeline/
stages/common.py) puts the span of the record an output came from into the output's
headers. Outputs are matched to their record by alert id: a stage's input records carry
it in a header, except normalize's (raw alerts), which says which alert came from which
record (`bind_alert`). Explain makes its record's span current around the LLM call
(`record_context`), so the router's `llm.dispatch` span is its child.

Without a configured tracer provider nothing is done at all: no span, no header (the
per-batch cost is then one isinstance check).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()
TRACE_HEADERS = ("traceparent", "tracestate")


def _tracer() -> trace.Tracer:
    """Looked up when used, not at import: a tracer got before the provider was set would
    stay bound to the first provider ever set (tests set one of their own each)."""
    return trace.get_tracer("secanalyst.pipeline")


def tracing_enabled() -> bool:
    """A tracer provider was set (an SDK); until then the API hands out a proxy."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def inject(carrier: dict[str, str], context: Context | None = None) -> dict[str, str]:
    """`carrier` with the trace context of `context` (default: the current one) added."""
    _propagator.inject(carrier, context=context)
    return carrier


def extract(headers: dict[str, str]) -> Context:
    """The context a record's headers carry (an empty one when they carry none or a
    malformed one: the headers come from any producer)."""
    return _propagator.extract({k: headers[k] for k in TRACE_HEADERS if k in headers})


def _key(record: Any) -> tuple[str, int, int]:
    return (record.topic, record.partition, record.offset)


class BatchSpans:
    """The spans of one batch's records, open while the batch runner handles it."""

    def __init__(self, stage: str, records: Sequence[Any], alert_header: str) -> None:
        self._by_record: dict[tuple[str, int, int], trace.Span] = {}
        self._by_alert: dict[str, trace.Span] = {}
        tracer = _tracer()
        for record in records:
            span = tracer.start_span(
                stage, context=extract(record.headers), kind=trace.SpanKind.CONSUMER,
                attributes={"messaging.system": "kafka",
                            "messaging.destination.name": record.topic,
                            "messaging.destination.partition.id": str(record.partition),
                            "messaging.kafka.offset": record.offset,
                            "secanalyst.stage": stage})
            self._by_record[_key(record)] = span
            alert_id = record.headers.get(alert_header)
            if alert_id:
                self._by_alert[alert_id] = span

    def span_of(self, record: Any) -> trace.Span | None:
        return self._by_record.get(_key(record))

    def bind_alert(self, record: Any, alert_id: str) -> None:
        span = self.span_of(record)
        if span is not None:
            self._by_alert[alert_id] = span

    def span_of_alert(self, alert_id: str) -> trace.Span | None:
        return self._by_alert.get(alert_id)

    def failed(self, record: Any, reason: str) -> None:
        span = self.span_of(record)
        if span is not None:
            span.set_status(trace.Status(trace.StatusCode.ERROR, reason))

    def end(self) -> None:
        for span in self._by_record.values():
            span.end()


_current: contextvars.ContextVar[BatchSpans | None] = contextvars.ContextVar(
    "secanalyst_batch_spans", default=None)


@contextmanager
def batch_spans(stage: str | None, records: Sequence[Any], *,
                alert_header: str) -> Iterator[BatchSpans | None]:
    """The records' spans for the duration of the batch (None when not tracing);
    `alert_header` names the header an input's alert id is in."""
    if stage is None or not tracing_enabled():
        yield None
        return
    spans = BatchSpans(stage, records, alert_header)
    token = _current.set(spans)
    try:
        yield spans
    finally:
        _current.reset(token)
        spans.end()


def bind_alert(record: Any, alert_id: str) -> None:
    """Outputs of `alert_id` continue the trace of `record` (normalize: raw records carry
    no alert id)."""
    spans = _current.get()
    if spans is not None:
        spans.bind_alert(record, alert_id)


@contextmanager
def record_context(record: Any) -> Iterator[None]:
    """The record's span is the current one (its LLM call and logs are in its trace)."""
    spans = _current.get()
    span = spans.span_of(record) if spans is not None else None
    if span is None:
        yield
        return
    with trace.use_span(span, end_on_exit=False):
        yield


def trace_headers(alert_id: str) -> dict[str, str]:
    """The trace headers for an output of `alert_id`: the context of its record's span
    (or of the current span), {} when there is none."""
    spans = _current.get()
    if spans is None:
        return {}
    span = spans.span_of_alert(alert_id)
    if span is None:
        current = trace.get_current_span()
        span = current if current.get_span_context().is_valid else None
    return inject({}, trace.set_span_in_context(span)) if span is not None else {}


@contextmanager
def publish_span(topic: str, count: int) -> Iterator[dict[str, str]]:
    """A producer span around sending `count` alerts to `topic` (a child of the current
    span, e.g. an ingest request's); yields the trace headers to send ({} when not
    tracing)."""
    if not tracing_enabled():
        yield {}
        return
    with _tracer().start_as_current_span(
            "publish", kind=trace.SpanKind.PRODUCER,
            attributes={"messaging.system": "kafka", "messaging.destination.name": topic,
                        "messaging.batch.message_count": count}):
        yield inject({})
