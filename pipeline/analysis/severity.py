"""Severity starts from Wazuh's rule level band; the model may move it one band, no more."""

from __future__ import annotations

from schemas.verdict import SEVERITIES, Severity


def band_for_level(level: int) -> Severity:
    if level <= 3:
        return "info"
    if level <= 7:
        return "low"
    if level <= 11:
        return "medium"
    if level <= 14:
        return "high"
    return "critical"


def bounded_severity(level: int, suggested: Severity) -> tuple[Severity, str]:
    """The final severity and where it came from."""
    base = band_for_level(level)
    base_index, suggested_index = SEVERITIES.index(base), SEVERITIES.index(suggested)
    if suggested_index == base_index:
        return base, f"rule level {level} band"
    step = 1 if suggested_index > base_index else -1
    moved = SEVERITIES[base_index + step]
    return moved, f"rule level {level} band ({base}), moved one band by the model"
