"""normalize: raw Wazuh alert bytes → NormalizedAlert, or a NormalizationError with a reason.

Accepts the shapes Wazuh writes in the wild: analysisd's alerts.json (4.x), indexer
documents (`_source`, `@timestamp`), active-response messages (`parameters.alert`),
wazuh-logtest output, and 3.x layouts with decoded fields at the top level.

Alert content is attacker-controlled. Decoding is bounded (size, nesting, numbers:
pipeline/analysis/safe_json.py), so a hostile alert is a NormalizationError with a reason (a dead
letter), never a library error. What PostgreSQL cannot store is made storable (NUL and
lone UTF-16 surrogates replaced by U+FFFD); such an alert is flagged `text_sanitized` and
keeps its original bytes (base64) in `original_b64`. An unparseable timestamp is flagged
`timestamp_invalid` and logged, not silently dropped.

The normalized message is `raw` plus bounded copies of some of its fields, so any alert
under `ingest.max_alert_bytes` fits the broker's message size: `data` is capped
(`data_truncated`), and so are the fields the manager writes — rule id, description,
groups, MITRE ids, agent, manager, decoder (`fields_truncated`); `raw` keeps them whole.
A large alert whose message would still not fit (numbers re-serialized longer, e.g.
`1e15` → `1000000000000000.0`) loses its `data` copy, else it is refused with the sizes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError

from pipeline.analysis.entities import extract_entities, fingerprint, incident_key
from pipeline.analysis.safe_json import JSONRejected, loads_bounded
from schemas.entities import Entities
from schemas.messages import NormalizedAlert, Priority
from schemas.wazuh import RawWazuhAlert

log = structlog.get_logger(__name__)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# What PostgreSQL's text and jsonb refuse: NUL, and UTF-16 surrogates (JSON's "\ud800"
# decodes to a lone one; a valid pair has already been joined by the decoder).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# The broker's default message size: nothing larger can come from Kafka, and nothing
# larger is decoded.
MAX_ALERT_BYTES = 1024 * 1024
# Longest string kept in `data` (as full_log's 4,000); `raw` keeps the whole alert.
DATA_TEXT_LIMIT = 4000
# ... and at most this much of it in all (serialized), so the normalized message stays
# `raw` plus a bounded rest, under the broker's message size.
DATA_BYTES_LIMIT = 64 * 1024
# Fields the manager writes: short in real alerts, bounded by nothing.
ID_LIMIT = 64  # rule, agent and MITRE ids, agent address
NAME_LIMIT = 200  # agent, manager and decoder names, each rule group
LIST_LIMIT = 32  # rule groups, MITRE ids
HASHES_LIMIT = 8
# The largest normalized message: under the producer's 1,048,576-byte request with room
# for what later stages add to it (embedding ~10 KB, runbook passages, similar verdicts),
# key, headers and framing. And the smallest alert whose message can reach it:
# under CHECKED_FROM bytes even a 4.5x growth of `raw` (numbers) plus every capped copy
# stays under the limit, so only larger alerts are measured.
NORMALIZED_LIMIT = 960_000
CHECKED_FROM = 128 * 1024
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


class _Caps:
    """Cuts the manager-written fields to their limits; counts what it cut."""

    def __init__(self) -> None:
        self.cut = 0

    def text(self, value: Any, limit: int) -> str | None:
        """As text, control characters stripped, at most `limit` characters."""
        if value is None:
            return None
        text = _CONTROL.sub("", str(value))
        if len(text) <= limit:
            return text
        self.cut += 1
        return text[:limit] + " …[truncated]"

    def ident(self, value: Any) -> str | None:
        """An id: cut, never changed (stripping "1\x002" to "12" would name another)."""
        if value is None:
            return None
        text = str(value)
        if len(text) <= ID_LIMIT:
            return text
        self.cut += 1
        return text[:ID_LIMIT] + " …[truncated]"

    def texts(self, values: list[str], limit: int) -> list[str]:
        if len(values) > LIST_LIMIT:
            self.cut += 1
        return [self.text(v, limit) or "" for v in values[:LIST_LIMIT]]

    def idents(self, values: list[str]) -> list[str]:
        if len(values) > LIST_LIMIT:
            self.cut += 1
        return [self.ident(v) or "" for v in values[:LIST_LIMIT]]


def clean_text(value: str | None, limit: int = 4000) -> str | None:
    """Strip control characters (alert text is attacker-controlled) and bound the length."""
    if value is None:
        return None
    text = _CONTROL.sub("", value)
    return text if len(text) <= limit else text[:limit] + " …[truncated]"


def storable(value: Any) -> tuple[Any, int]:
    """`value` with NUL and lone surrogates replaced by U+FFFD, in every string and key,
    and how many strings changed. Replaced, not removed: "ro\\0ot" must not read "root".
    Recursive: call it on bounded-depth values only."""
    changed = 0

    def text(item: str) -> str:
        nonlocal changed
        if _UNSTORABLE.search(item) is None:
            return item
        changed += 1
        return _UNSTORABLE.sub("\ufffd", item)

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            return text(item)
        if isinstance(item, dict):
            return {text(k): walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        return item

    return walk(value), changed


def parse_timestamp(value: str | None) -> datetime | None:
    if not value or not isinstance(value, str):
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


def bounded_data(data: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """`data` with long strings cut (bounded_strings), then only the fields that fit in
    DATA_BYTES_LIMIT serialized, in order (many short fields are as large as one long
    one), and how many strings or fields were cut or left out."""
    cut_data, cut = bounded_strings(data)
    kept: dict[str, Any] = {}
    size = 2
    for key, value in cut_data.items():
        item = len(json.dumps({key: value}, default=str).encode()) - 1
        if size + item > DATA_BYTES_LIMIT:
            cut += 1
            continue
        kept[key] = value
        size += item
    return kept, cut


def bounded_strings(value: Any, limit: int = DATA_TEXT_LIMIT) -> tuple[Any, int]:
    """`value` with every string longer than `limit` cut (marked), and how many were.
    `data` is a second copy of alert text beside `raw`: unbounded, a 600 KB field (a
    PowerShell script block) makes the normalized message twice the alert and over the
    broker's message size. Recursive: call it on bounded-depth values only."""
    if isinstance(value, str):
        return (value, 0) if len(value) <= limit else (value[:limit] + " …[truncated]", 1)
    if isinstance(value, dict):
        cut = 0
        out: dict[str, Any] = {}
        for key, item in value.items():
            out[key], n = bounded_strings(item, limit)
            cut += n
        return out, cut
    if isinstance(value, list):
        pairs = [bounded_strings(item, limit) for item in value]
        return [item for item, _ in pairs], sum(n for _, n in pairs)
    return value, 0


def alert_id_for(document: dict[str, Any], raw: RawWazuhAlert) -> str:
    """Wazuh's own id when it has one (a hash of it when it is longer than any id Wazuh
    writes: it is a key, a header and a column), else a stable hash of the whole alert."""
    if raw.id:
        if len(raw.id) <= ID_LIMIT:
            return raw.id
        return "sha256:" + hashlib.sha256(raw.id.encode()).hexdigest()[:32]
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _clean_entities(entities: Entities) -> Entities:
    """Entity values are attacker-controlled text too: strip and bound them."""
    values = entities.model_dump()
    for key, value in values.items():
        if isinstance(value, str):
            values[key] = clean_text(value, 500)
    values["hashes"] = {clean_text(k, 32) or "": clean_text(v, 200) or ""
                        for k, v in list(entities.hashes.items())[:HASHES_LIMIT]}
    return Entities(**values)


def normalize(value: bytes, *, tenant_id: str, priority: Priority = "live") -> NormalizedAlert:
    if len(value) > MAX_ALERT_BYTES:
        raise NormalizationError(f"the alert is {len(value):,} bytes, over the "
                                 f"{MAX_ALERT_BYTES:,}-byte limit")
    try:
        document = loads_bounded(value)
    except JSONRejected as exc:
        raise NormalizationError(exc.message) from exc
    if not isinstance(document, dict):
        raise NormalizationError(f"expected a JSON object, got {type(document).__name__}")
    document, sanitized = storable(document)
    flags = ["text_sanitized"] if sanitized else []
    document = _unwrap(document)
    try:
        raw = RawWazuhAlert.model_validate(document)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "alert"
        raise NormalizationError(f"field '{where}': {first['msg']}") from exc
    alert = _assemble(raw, document, tenant_id=tenant_id, priority=priority, flags=flags,
                      original=value if sanitized else None)
    return alert if len(value) < CHECKED_FROM else fitted(alert)


def _assemble(raw: RawWazuhAlert, document: dict[str, Any], *, tenant_id: str,
              priority: Priority, flags: list[str], original: bytes | None) -> NormalizedAlert:
    """The normalized alert of a validated one: bounded copies of its fields beside it."""
    data, cut = bounded_data(_decoded_fields(raw, document))
    if cut:
        flags.append("data_truncated")
    full_log = clean_text(raw.full_log)
    entities = _clean_entities(extract_entities({**document, "data": data}, full_log))
    stated_time = raw.timestamp or document.get("@timestamp")
    timestamp = parse_timestamp(stated_time)
    alert_id = alert_id_for(document, raw)
    if stated_time not in (None, "") and timestamp is None:
        flags.append("timestamp_invalid")
        log.warning("alert_timestamp_invalid", tenant_id=tenant_id, alert_id=alert_id,
                    timestamp=clean_text(str(stated_time), 100))
    agent = raw.agent
    caps = _Caps()
    return NormalizedAlert(
        tenant_id=tenant_id,
        alert_id=alert_id,
        priority=priority,
        # Over the whole values: two alerts that differ past a cut are not one incident.
        fingerprint=fingerprint(raw.rule.id, agent.name if agent else None, raw.rule.groups,
                                entities),
        incident_key=incident_key(raw.rule.id, raw.rule.groups, entities),
        timestamp=timestamp,
        rule_id=caps.ident(raw.rule.id) or "",
        rule_level=raw.rule.level,
        rule_description=caps.text(raw.rule.description, 500) or "",
        rule_groups=caps.texts(raw.rule.groups, NAME_LIMIT),
        wazuh_mitre_ids=caps.idents(list(raw.rule.mitre.id) if raw.rule.mitre else []),
        agent_id=caps.ident(agent.id) if agent else None,
        agent_name=caps.text(agent.name, NAME_LIMIT) if agent else None,
        agent_ip=caps.ident(agent.ip) if agent else None,
        manager=caps.text((raw.manager or {}).get("name"), NAME_LIMIT),
        location=clean_text(raw.location, 500),
        decoder=caps.text((raw.decoder or {}).get("name"), NAME_LIMIT),
        entities=entities,
        full_log=full_log,
        data=data,
        raw=document,
        flags=flags + (["fields_truncated"] if caps.cut else []),
        original_b64=None if original is None else base64.b64encode(original).decode(),
    )


def message_size(alert: NormalizedAlert) -> int:
    """Bytes of the message the normalize stage publishes (without original_b64)."""
    return len(alert.model_dump_json(exclude={"original_b64"}).encode())


def fitted(alert: NormalizedAlert) -> NormalizedAlert:
    """`alert` if its message fits NORMALIZED_LIMIT; else without its `data` copy (the
    alerts row and `raw` have it) if that fits; else a NormalizationError with the sizes."""
    size = message_size(alert)
    if size <= NORMALIZED_LIMIT:
        return alert
    lean = alert.model_copy(update={"data": {}, "flags": sorted(
        {*alert.flags, "data_truncated"})})
    lean_size = message_size(lean)
    if lean_size <= NORMALIZED_LIMIT:
        return lean
    raise NormalizationError(
        f"the normalized alert is {lean_size:,} bytes (raw re-serialized: numbers such "
        f"as 1e15 written out), over the {NORMALIZED_LIMIT:,}-byte message limit")

