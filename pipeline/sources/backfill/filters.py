"""Which archived alerts a backfill replays: time range, minimum rule level, groups."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from pipeline.analysis.normalize import _unwrap, parse_timestamp
from pipeline.kafka.alert_guard import AlertRefused, screen_alert


class Parsed(NamedTuple):
    """One archive line: the alert and its id as the normalize stage computes it, or
    (document None) why the line cannot be sent: over the size limit, or not a JSON
    object within bounds (pipeline/kafka/alert_guard.py). A tuple: one is made per line."""

    document: dict[str, Any] | None
    alert_id: str | None
    refusal: AlertRefused | None = None


def parse_line(data: bytes, *, max_bytes: int = 1_000_000) -> Parsed:
    try:
        document = screen_alert(data, max_bytes=max_bytes)
    except AlertRefused as refusal:
        return Parsed(None, None, refusal)
    alert = _unwrap(document)
    alert_id = alert.get("id")
    if not isinstance(alert_id, str) or not alert_id:
        canonical = json.dumps(alert, sort_keys=True, separators=(",", ":"), default=str)
        # surrogatepass: a lone surrogate must not crash the replay (normalize decides).
        digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
        alert_id = "sha256:" + digest[:32]
    return Parsed(alert, alert_id)


@dataclass(frozen=True)
class AlertFilter:
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    min_level: int | None = None
    groups: frozenset[str] = frozenset()  # any of them

    def matches(self, alert: dict[str, Any]) -> bool:
        rule = alert.get("rule") if isinstance(alert.get("rule"), dict) else {}
        assert isinstance(rule, dict)
        if self.min_level is not None:
            level = rule.get("level")
            if not isinstance(level, int) or level < self.min_level:
                return False
        if self.groups:
            groups = rule.get("groups")
            if not isinstance(groups, list) or not self.groups.intersection(map(str, groups)):
                return False
        if self.since is not None or self.until is not None:
            stamp = alert.get("timestamp") or alert.get("@timestamp")
            when = parse_timestamp(stamp) if isinstance(stamp, str) else None
            if when is None:
                return False
            if self.since is not None and when < self.since:
                return False
            if self.until is not None and when >= self.until:
                return False
        return True

    @property
    def active(self) -> bool:
        return bool(self.since or self.until or self.min_level is not None or self.groups)
