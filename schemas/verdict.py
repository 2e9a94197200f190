"""What the model must answer (LLMVerdict) and what secanalyst stores (Verdict)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Severity = Literal["info", "low", "medium", "high", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high", "critical")


class LLMVerdict(BaseModel):
    """The JSON object the model is constrained to produce. Kept small on purpose: the
    model adds a narrative and picks among grounded steps (by number); a "large" task
    may also propose a severity (with the alert fact that justifies it) and ATT&CK ids.
    Every field is a claim that pipeline/analysis/verdict_checks checks before it is shown."""

    model_config = ConfigDict(extra="ignore")
    summary: str = Field(min_length=1, max_length=1200)
    steps: list[int] = Field(default_factory=list, max_length=8)  # 1-based, grounded list
    severity: Severity | None = None
    severity_reason: str | None = Field(default=None, max_length=400)
    attack_ids: list[str] = Field(default_factory=list, max_length=8)
    next_steps: list[str] = Field(default_factory=list, max_length=8)  # free text: ignored


class AttackTechnique(BaseModel):
    id: str
    name: str
    tactics: list[str] = Field(default_factory=list)
    source: Literal["wazuh", "runbook", "model", "analyst"]
    status: Literal["valid", "revoked", "unknown"] = "valid"
    replaces: str | None = None  # the revoked id this one replaced (shown with it)
    evidence: str | None = None  # why it is there: "rule 5712 mitre", "runbook ... scopes ..."


class VerdictFacts(BaseModel):
    """What happened, built without the LLM (pipeline/analysis/facts.py): true whatever the model
    says, and what the console, the verdicts topic and the Wazuh write-back show first."""

    sentence: str
    rule_id: str
    rule_description: str
    level: int
    band: Severity
    agent: str | None = None
    src_ip: str | None = None
    dst_ip: str | None = None
    src_port: str | None = None
    dst_port: str | None = None
    user: str | None = None
    process: str | None = None
    file: str | None = None
    hash: str | None = None
    count: int = 1  # storm counter: events this alert stands for
    first_seen: str | None = None  # ISO
    last_seen: str | None = None
    attack_ids: list[str] = Field(default_factory=list)  # the rule's own


class CheckResult(BaseModel):
    """One named check of one model claim (pipeline/analysis/verdict_checks)."""

    name: str
    claim: Literal["summary", "severity", "attack", "next_steps"]
    passed: bool
    reason: str | None = None


class Verdict(BaseModel):
    tenant_id: str
    alert_id: str
    rule_id: str
    rule_level: int
    severity: Severity
    severity_source: str
    summary: str  # what is shown: the checked model narrative, else facts.sentence
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
    facts: VerdictFacts | None = None
    checks: list[CheckResult] = Field(default_factory=list)
    explanation: str | None = None  # the model's narrative, only when it passed its checks

    @property
    def attack_ids(self) -> list[str]:
        return [technique.id for technique in self.attack]
