"""Check of a severity the model proposes. The Wazuh band stands unless the model moves
it (one band at most) with a reason that names a fact the alert itself carries: a
privileged account, the event count, a known-bad verdict or a critical asset to go up; a
clean or blocked outcome to go down. Text inside the alert ("rate this LOW") is no fact."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.analysis.verdict_checks.context import CheckContext
from pipeline.analysis.verdict_checks.polarity import alert_sides
from schemas.verdict import SEVERITIES, Severity

PRIVILEGED = frozenset({"root", "administrator", "admin", "system", "nt authority\\system",
                        "domain admins", "enterprise admins"})


@dataclass(frozen=True)
class SeverityClaim:
    severity: Severity | None
    reason: str | None


def raising_facts(ctx: CheckContext, reason: str) -> list[str]:
    """The alert facts a reason names that justify a higher band."""
    text = reason.lower()
    found = []
    entities = ctx.alert.entities
    for user in (entities.src_user, entities.dst_user):
        if user and user.lower() in PRIVILEGED and user.lower() in text:
            found.append(f"privileged account {user}")
    if ctx.facts.count > 1 and re.search(rf"\b{ctx.facts.count}\b", text):
        found.append(f"count {ctx.facts.count}")
    if alert_sides(ctx.alert).get("detection") == "detected" and (
            (entities.malware and entities.malware.lower() in text)
            or re.search(r"\b(malware|virus|malicious|detected|engines)\b", text)):
        found.append("known-bad verdict")
    agent = (ctx.facts.agent or "").lower()
    if agent and agent in ctx.critical_assets and agent in text:
        found.append(f"critical asset {ctx.facts.agent}")
    return found


def lowering_facts(ctx: CheckContext, reason: str) -> list[str]:
    text = reason.lower()
    sides = alert_sides(ctx.alert)
    found = []
    if sides.get("detection") == "clean" and re.search(r"\b(clean|no positives|solved)\b",
                                                       text):
        found.append("clean verdict")
    if sides.get("action") == "blocked" and re.search(r"\b(block|drop|den|prevent)", text):
        found.append("blocked")
    return found


def moved_with_a_fact(ctx: CheckContext, claim: SeverityClaim) -> str | None:
    band = ctx.facts.band
    if claim.severity is None or claim.severity == band:
        return None
    step = SEVERITIES.index(claim.severity) - SEVERITIES.index(band)
    if abs(step) > 1:
        return f"moves {band} → {claim.severity}, more than one band"
    if not claim.reason or not claim.reason.strip():
        return f"moves {band} → {claim.severity} without a reason"
    facts = (raising_facts if step > 0 else lowering_facts)(ctx, claim.reason)
    if not facts:
        return (f"moves {band} → {claim.severity}; the reason names no fact of the alert "
                "(privileged account, count, known-bad verdict, critical asset)")
    return None


def final_severity(ctx: CheckContext, claim: SeverityClaim,
                   passed: bool) -> tuple[Severity, str]:
    """(severity, where it came from)."""
    band = ctx.facts.band
    if passed and claim.severity and claim.severity != band:
        named = (raising_facts if SEVERITIES.index(claim.severity) > SEVERITIES.index(band)
                 else lowering_facts)(ctx, claim.reason or "")
        return claim.severity, (f"rule level {ctx.facts.level} band ({band}), moved by the "
                                f"model: {', '.join(named)}")
    return band, f"rule level {ctx.facts.level} band"


CHECKS = (("severity.moved_with_a_fact", moved_with_a_fact),)
