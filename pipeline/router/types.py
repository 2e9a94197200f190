"""What a caller gives the router and gets back. A module of its own so that the router
and the helpers around it (streaming.py, metering.py) share them without importing
each other."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline.router.tokens import Message


@dataclass(frozen=True)
class ChatRequest:
    tenant_id: str
    messages: list[Message]
    max_tokens: int
    temperature: float = 0.0
    priority: str = "standard"
    alert_id: str | None = None
    response_format: dict[str, Any] | None = None
    extra_body: dict[str, object] = field(default_factory=dict)
    # Seconds the caller will wait, from the call to complete(); bounds the admission
    # queue wait (None: the router's max_queue_wait_s).
    deadline_s: float | None = None


@dataclass(frozen=True)
class Completion:
    request_id: str
    text: str
    input_tokens: int
    output_tokens: int
    estimated_input_tokens: int
    ttft_ms: int | None
    latency_ms: int
    pool: str
    replica: str
    finish_reason: str | None
