"""structlog everywhere: JSON when not on a terminal (production), readable on a terminal."""

from __future__ import annotations

import logging
import sys

import structlog
from opentelemetry import trace


class _CurrentStderr:
    """Writes to whatever sys.stderr is now, not the one seen at configure time (a test
    runner swaps it per test and closes the old one; a cached logger must not follow)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def add_trace_ids(_: object, __: str, event: structlog.typing.EventDict
                  ) -> structlog.typing.EventDict:
    """`trace_id` and `span_id` (hex, as trace backends show them) when a span is current,
    so a log line is found from its trace and the other way round."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event.setdefault("trace_id", format(context.trace_id, "032x"))
        event.setdefault("span_id", format(context.span_id, "016x"))
    return event


def configure_logging(level: str = "INFO", fmt: str = "auto") -> None:
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_ids,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer())
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(message)s")
    for noisy in ("aiokafka", "httpx", "httpx2", "sentence_transformers", "faststream"):
        logging.getLogger(noisy).setLevel(max(logging.getLevelName(level), logging.WARNING))
