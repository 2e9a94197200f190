"""One row of llm_usage_events: what a single LLM request cost and how fast it was."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, Field


class UsageEvent(BaseModel):
    id: uuid.UUID = Field(default_factory=uuid.uuid4)
    tenant_id: str
    model_name: str
    pool: str
    replica: str
    priority: str = "standard"
    request_id: str
    alert_id: str | None = None
    input_tokens: int
    output_tokens: int
    ttft_ms: int | None = None
    total_latency_ms: int | None = None
    status_code: int
    error_kind: str | None = None
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens
