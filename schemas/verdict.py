"""What the model must answer (LLMVerdict) and what secanalyst stores (Verdict)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")


class LLMVerdict(BaseModel):
    """The JSON object the model is constrained to produce. Kept small on purpose:
    a tiny model spends its tokens better on a short schema."""

    model_config = ConfigDict(extra="ignore")
    severity: Severity
    summary: str = Field(min_length=1, max_length=1200)
    attack_ids: list[str] = Field(default_factory=list, max_length=8)
    next_steps: list[str] = Field(default_factory=list, max_length=8)


class AttackTechnique(BaseModel):
    id: str
    name: str
    tactics: list[str] = Field(default_factory=list)
    source: Literal["wazuh", "runbook", "model", "analyst"]


class Verdict(BaseModel):
    tenant_id: str
    alert_id: str
    rule_id: str
    rule_level: int
    severity: Severity
    severity_source: str
    summary: str
    attack: list[AttackTechnique]
    next_steps: list[str]
    cited_chunks: list[str]
    retrieval_ids: list[str] = Field(default_factory=list)
    status: Literal["explained", "needs_review", "reused"]
    review_reason: str | None = None
    fingerprint: str | None = None
    incident_key: str | None = None
    reused_from: str | None = None
    provenance: dict[str, object] = Field(default_factory=dict)
    confidence: float | None = Field(default=None, ge=0, le=1)
    attack_dropped: int = 0
    model_name: str
    prompt_version: str
    input_tokens: int
    output_tokens: int
    latency_ms: int
    created_at: datetime | None = None

    @property
    def attack_ids(self) -> list[str]:
        return [technique.id for technique in self.attack]
