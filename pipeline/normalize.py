"""normalize: raw Wazuh alert bytes → NormalizedAlert, or a NormalizationError with a reason.

Accepts the shapes Wazuh writes in the wild: analysisd's alerts.json (4.x), indexer
documents (`_source`, `@timestamp`), active-response messages (`parameters.alert`),
wazuh-logtest output, and 3.x layouts with decoded fields at the top level.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from pipeline.entities import extract_entities, fingerprint, incident_key
from schemas.entities import Entities
from schemas.messages import NormalizedAlert, Priority
from schemas.wazuh import RawWazuhAlert

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Fields 3.x managers decoded at the top level instead of under `data`.
_TOP_LEVEL_DECODED = ("srcip", "dstip", "srcport", "dstport", "srcuser", "dstuser", "user",
                      "url", "protocol", "action", "id", "status", "system_name", "command")
_TIME_FORMATS = ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z", "%Y %b %d %H:%M:%S",
                 "%b %d %H:%M:%S")


class NormalizationError(ValueError):
    """The alert cannot be normalized; `reason` says why, for the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def clean_text(value: str | None, limit: int = 4000) -> str | None:
    """Strip control characters (alert text is attacker-controlled) and bound the length."""
    if value is None:
        return None
    text = _CONTROL.sub("", value)
    return text if len(text) <= limit else text[:limit] + " …[truncated]"


def parse_timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    text = value.strip().replace("Z", "+0000")
    for fmt in _TIME_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _unwrap(document: dict[str, Any]) -> dict[str, Any]:
    """Reach the alert inside the envelopes Wazuh and its indexer put around it."""
    if isinstance(document.get("_source"), dict):
        document = document["_source"]
    parameters = document.get("parameters")
    if "rule" not in document and isinstance(parameters, dict):
        inner = parameters.get("alert")
        if isinstance(inner, dict):
            document = inner
    return document


def _decoded_fields(raw: RawWazuhAlert, document: dict[str, Any]) -> dict[str, Any]:
    data = dict(raw.data or {})
    for key in _TOP_LEVEL_DECODED:
        if key in document and key not in data and not isinstance(document[key], dict):
            data[key] = document[key]
    return data


def alert_id_for(document: dict[str, Any], raw: RawWazuhAlert) -> str:
    """Wazuh's own id when it has one, else a stable hash of the whole alert."""
    if raw.id:
        return raw.id
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _clean_entities(entities: Entities) -> Entities:
    """Entity values are attacker-controlled text too: strip and bound them."""
    values = entities.model_dump()
    for key, value in values.items():
        if isinstance(value, str):
            values[key] = clean_text(value, 500)
    return Entities(**values)


def normalize(value: bytes, *, tenant_id: str, priority: Priority = "live") -> NormalizedAlert:
    try:
        document = json.loads(value)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise NormalizationError(f"not valid JSON: {exc}") from exc
    if not isinstance(document, dict):
        raise NormalizationError(f"expected a JSON object, got {type(document).__name__}")
    document = _unwrap(document)
    try:
        raw = RawWazuhAlert.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "alert"
        raise NormalizationError(f"field '{where}': {first['msg']}") from exc

    data = _decoded_fields(raw, document)
    agent = raw.agent
    full_log = clean_text(raw.full_log)
    entities = _clean_entities(extract_entities({**document, "data": data}, full_log))
    timestamp = parse_timestamp(raw.timestamp or document.get("@timestamp"))
    return NormalizedAlert(
        tenant_id=tenant_id,
        alert_id=alert_id_for(document, raw),
        priority=priority,
        fingerprint=fingerprint(raw.rule.id, agent.name if agent else None, raw.rule.groups,
                                entities),
        incident_key=incident_key(raw.rule.id, raw.rule.groups, entities),
        timestamp=timestamp,
        rule_id=raw.rule.id,
        rule_level=raw.rule.level,
        rule_description=clean_text(raw.rule.description, 500) or "",
        rule_groups=raw.rule.groups,
        wazuh_mitre_ids=list(raw.rule.mitre.id) if raw.rule.mitre else [],
        agent_id=agent.id if agent else None,
        agent_name=clean_text(agent.name, 200) if agent else None,
        agent_ip=agent.ip if agent else None,
        manager=_text((raw.manager or {}).get("name")),
        location=clean_text(raw.location, 500),
        decoder=_text((raw.decoder or {}).get("name")),
        entities=entities,
        full_log=full_log,
        data=data,
        raw=document,
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
