"""Which way an alert goes on four axes (success/failure, detected/clean, blocked/allowed,
added/removed), read from Wazuh's rule description and decoder fields — and whether a
text asserts one side (not negated). A summary asserting the other side contradicts it."""

from __future__ import annotations

import re
from typing import Any

from pipeline.analysis.entities import _get  # one dotted-path reader for alert documents
from schemas.messages import NormalizedAlert

# axis → (side name, pattern) × 2
AXES: dict[str, tuple[tuple[str, re.Pattern[str]], tuple[str, re.Pattern[str]]]] = {
    "outcome": (
        ("failure", re.compile(r"\b(fail(ed|ure|ures|s)?|invalid|unsuccessful|wrong password"
                               r"|non[- ]?existent|unauthori[sz]ed|missed the password"
                               r"|error)\b", re.I)),
        ("success", re.compile(r"\b(success(ful|fully)?|succeeded|logged (in|to)"
                               r"|authenticated|accepted password|login success)\b", re.I))),
    "detection": (
        ("detected", re.compile(r"\b(detect(ed|s)?|positives? (found|match)|malicious"
                                r"|infected|engines detected|virus found|affects)\b", re.I)),
        ("clean", re.compile(r"\b(no positives|clean|not malicious|harmless|was solved"
                             r"|resolved|no (threat|malware|virus)(es)? (was |were )?found)\b",
                             re.I))),
    "action": (
        ("blocked", re.compile(r"\b(drop(ped|s)?|block(ed|s)?|denied|deny|reject(ed)?"
                               r"|prevented|quarantined|protect you)\b", re.I)),
        ("allowed", re.compile(r"\b(allow(ed|s)?|permitted|returned (code )?200)\b", re.I))),
    "state": (  # a paused container is not a stopped one
        ("paused", re.compile(r"\b(paused|unpaused|resumed)\b", re.I)),
        ("stopped", re.compile(r"\b(stopped|shut down|killed|exited|terminated)\b", re.I))),
    "change": (
        ("added", re.compile(r"\b(added|created|launched|started|installed)\b", re.I)),
        ("removed", re.compile(r"\b(deleted|removed|stopped|shut down|uninstalled"
                               r"|disabled)\b", re.I))),
}
_NEGATION = re.compile(r"\b(no|not|never|without|none|zero|nor|isn't|wasn't|didn't|n't)\b",
                       re.I)
# Decoder fields that state a side directly (field path, value test, axis, side).
_FIELD_SIDES: tuple[tuple[str, str, str, str], ...] = (
    ("syscheck.event", "added", "change", "added"),
    ("syscheck.event", "deleted", "change", "removed"),
    ("data.virustotal.malicious", "0", "detection", "clean"),
    ("data.virustotal.malicious", "1", "detection", "detected"),
    ("data.action", "drop", "action", "blocked"),
    ("data.action", "block", "action", "blocked"),
    ("data.action", "allowed", "action", "allowed"),
)


def asserted(text: str, pattern: re.Pattern[str]) -> bool:
    """The text says it (a match not negated by one of the three words before it)."""
    for match in pattern.finditer(text):
        before = text[max(0, match.start() - 40):match.start()].split()[-3:]
        if not _NEGATION.search(" ".join(before)):
            return True
    return False


def alert_sides(alert: NormalizedAlert) -> dict[str, str]:
    """axis → side, only where the alert is unambiguous (both sides stated → no fact)."""
    sides: dict[str, set[str]] = {}
    description = alert.rule_description or ""
    for axis, options in AXES.items():
        for side, pattern in options:
            if asserted(description, pattern):
                sides.setdefault(axis, set()).add(side)
    document: dict[str, Any] = {**alert.raw, "data": alert.data}
    for path, value, axis, side in _FIELD_SIDES:
        found = _get(document, path)
        if found is not None and str(found).lower() == value:
            sides.setdefault(axis, set()).add(side)
    return {axis: next(iter(found)) for axis, found in sides.items() if len(found) == 1}


def contradiction(alert: NormalizedAlert, text: str) -> str | None:
    """The first axis where the text asserts the side opposite to the alert's."""
    for axis, side in alert_sides(alert).items():
        (first, first_re), (second, second_re) = AXES[axis]
        other, other_re = (second, second_re) if side == first else (first, first_re)
        if asserted(text, other_re):
            return f"says {other} but the alert is a {side} ({axis})"
    return None
