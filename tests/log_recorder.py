"""A stand-in for a module's structlog logger in a test.

The suite's logging setup (pipeline.logging) caches each logger on its first use, and
structlog.testing.capture_logs cannot reach a logger cached before it: a test that
asserts on a log line replaces the module's `log` with this (monkeypatch.setattr).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class LogRecorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __getattr__(self, level: str) -> Callable[..., None]:
        def emit(event: str, **fields: Any) -> None:
            self.events.append({"event": event, "level": level, **fields})
        return emit
