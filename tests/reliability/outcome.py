"""What the end-to-end reliability tests read back: which alert a dead letter is about, and
whether two verdicts published for one alert are different verdicts."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from pipeline.analysis.normalize import NormalizationError, normalize


def letter_alert_id(letter: dict[str, Any], tenant: str) -> str:
    """The alert a dead letter is about: later stages dead-letter their own message (which
    holds the normalized alert); normalize dead-letters the raw alert. "" when unknown."""
    if letter.get("original_encoding") != "utf-8":
        return ""
    try:
        original = json.loads(letter["original"])
    except ValueError:
        return ""
    if isinstance(original, dict) and isinstance(original.get("alert"), dict):
        return str(original["alert"].get("alert_id", ""))
    if isinstance(original, dict) and "alert_id" in original:
        return str(original["alert_id"])
    try:
        return normalize(letter["original"].encode(), tenant_id=tenant).alert_id
    except NormalizationError:
        return ""


def twice_verdicted(published: list[dict[str, Any]], tenant: str) -> list[str]:
    """Alerts with two different verdicts on the verdicts topic (a second LLM answer), as
    opposed to the same verdict published again on redelivery. The first publication
    comes from the stage and the re-publication from the stored row (which adds
    `created_at` and the like), so only what the model's call produced is compared."""
    versions: dict[str, set[str]] = defaultdict(set)
    for message in published:
        if message.get("tenant_id") == tenant:
            versions[message["alert_id"]].add(json.dumps(
                [message.get("summary"), message.get("input_tokens"),
                 message.get("output_tokens"), message.get("latency_ms")]))
    return sorted(alert for alert, seen in versions.items() if len(seen) > 1)
