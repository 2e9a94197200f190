"""Spans of one test in an in-memory exporter, under a tracer provider of that test's own.

The OpenTelemetry API lets a process set its tracer provider once; a test that traces sets
its own and unsets it afterwards (as opentelemetry's own test utilities do), so the tests
after it run untraced, as production does without an SDK."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once


def _unset_tracer_provider() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


@contextmanager
def captured_spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _unset_tracer_provider()
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        _unset_tracer_provider()
        provider.shutdown()
