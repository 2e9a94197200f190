"""Messages between the pipeline stages (Kafka values, JSON).

Every message carries tenant_id, alert_id, priority and a schema version; the Kafka
headers carry the same tenant and alert id so a consumer can route without parsing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.entities import Entities
from schemas.vector import PackedVector

# 2: vectors (EmbeddedAlert, EnrichedAlert) go out packed, base64 of little-endian
# float32 (schemas/vector.py); a reader still accepts version 1's float lists.
SCHEMA_VERSION = 2
Priority = Literal["live", "batch"]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    schema_version: int = SCHEMA_VERSION


class NormalizedAlert(_Message):
    tenant_id: str
    alert_id: str
    priority: Priority = "live"
    fingerprint: str
    incident_key: str = ""
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
    entities: Entities = Field(default_factory=Entities)
    full_log: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    raw: dict[str, Any]
    # What normalize noticed: "text_sanitized" (NUL or lone surrogates replaced by U+FFFD;
    # the original bytes are in original_b64), "timestamp_invalid" (timestamp unreadable),
    # "data_truncated" (a string in data over 4,000 characters cut, fields over 64 KiB in
    # all left out; raw has them whole), "fields_truncated" (a manager-written field —
    # rule id, description, groups, MITRE ids, agent, manager, decoder — over its cap cut;
    # raw has it whole). See pipeline/analysis/normalize.py.
    flags: list[str] = Field(default_factory=list)
    original_b64: str | None = None


class EmbeddedAlert(_Message):
    alert: NormalizedAlert
    embedding: PackedVector


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


class SimilarVerdict(BaseModel):
    """A past verdict of the same tenant on a similar alert, and how analysts judged it."""

    alert_id: str
    rule_id: str
    severity: str
    summary: str
    analyst_status: str
    similarity: float
    score: float  # similarity weighted by analyst feedback


class EnrichedAlert(_Message):
    alert: NormalizedAlert
    embedding: PackedVector | None = None
    runbooks: list[RunbookCitation] = Field(default_factory=list)
    similar: list[SimilarVerdict] = Field(default_factory=list)


class DeadLetter(_Message):
    stage: str
    reason: str
    tenant_id: str | None = None
    original: str  # the original bytes, decoded as UTF-8 with surrogate escapes kept as \\x
    original_encoding: Literal["utf-8", "base64"] = "utf-8"
    original_size: int | None = None  # bytes of the whole original
    original_truncated: bool = False  # only its first bytes are here (see topic/offset)
    original_sha256: str | None = None  # of the whole original (an oversized line's)
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
