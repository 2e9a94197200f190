"""Messages between the pipeline stages (Kafka values, JSON).

Every message carries tenant_id, alert_id, priority and a schema version; the Kafka
headers carry the same tenant and alert id so a consumer can route without parsing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
Priority = Literal["live", "batch"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION


class NormalizedAlert(_Message):
    tenant_id: str
    alert_id: str
    priority: Priority = "live"
    fingerprint: str
    timestamp: datetime | None
    rule_id: str
    rule_level: int
    rule_description: str
    rule_groups: list[str] = Field(default_factory=list)
    wazuh_mitre_ids: list[str] = Field(default_factory=list)
    agent_id: str | None = None
    agent_name: str | None = None
    agent_ip: str | None = None
    manager: str | None = None
    location: str | None = None
    decoder: str | None = None
    src_ip: str | None = None
    src_user: str | None = None
    dst_user: str | None = None
    full_log: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    raw: dict[str, Any]


class EmbeddedAlert(_Message):
    alert: NormalizedAlert
    embedding: list[float]


class RunbookCitation(BaseModel):
    chunk_id: str
    runbook: str
    title: str
    heading: str
    attack_ids: list[str] = Field(default_factory=list)
    wazuh_groups: list[str] = Field(default_factory=list)
    wazuh_rules: list[str] = Field(default_factory=list)
    score: float
    text: str


class EnrichedAlert(_Message):
    alert: NormalizedAlert
    runbooks: list[RunbookCitation] = Field(default_factory=list)


class DeadLetter(_Message):
    stage: str
    reason: str
    tenant_id: str | None = None
    original: str  # the original bytes, decoded as UTF-8 with surrogate escapes kept as \\x
    original_encoding: Literal["utf-8", "base64"] = "utf-8"
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
