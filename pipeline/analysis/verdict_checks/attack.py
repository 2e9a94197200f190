"""ATT&CK: Wazuh's ids are kept but validated (a revoked id is replaced by what revoked it,
the original shown in `replaces`; an unknown id is kept, marked "unknown"); a runbook's ids
only where its front matter scopes them to this rule, group or decoder and the technique's
platforms include the alert's; the model's ids only with evidence. Each id says why."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pipeline.analysis import attack as catalog
from pipeline.analysis.runbooks import Runbook
from pipeline.analysis.verdict_checks.context import CheckContext
from schemas.messages import NormalizedAlert
from schemas.verdict import AttackTechnique

# The log sources (ATT&CK analytics) that fit each alert family, by Wazuh group/decoder.
_FAMILY_LOG_SOURCES: tuple[tuple[frozenset[str], tuple[str, ...]], ...] = (
    (frozenset({"sshd", "pam", "sudo", "su", "syslog", "adduser"}), ("linux:syslog",)),
    (frozenset({"audit", "auditd", "audit_command"}), ("auditd:",)),
    (frozenset({"syscheck", "syscheck_integrity_changed", "syscheck_new_entry",
                "syscheck_deleted"}), ("fs:", "auditd:PATH", "auditd:FILE",
                                       "WinEventLog:Security")),
    (frozenset({"sysmon", "windows_eventchannel"}), ("WinEventLog:",)),
    (frozenset({"aws", "aws_cloudtrail"}), ("AWS:",)),
    (frozenset({"office365"}), ("m365:",)),
    (frozenset({"github"}), ("saas:github",)),
    (frozenset({"docker"}), ("docker:", "containerd:")),
    (frozenset({"firewall", "ids", "suricata", "web-accesslog", "web", "accesslog"}),
     ("NSM:", "Network Traffic", "Application Log")),
)


def alert_platforms(alert: NormalizedAlert) -> frozenset[str]:
    """ATT&CK platforms of the alert's source."""
    groups = set(alert.rule_groups) | {alert.decoder or ""}
    path = alert.entities.file_path or alert.entities.process or ""
    if ("windows" in groups or "windows_eventchannel" in groups or "sysmon" in groups
            or re.match(r"^[a-z]:\\", path, re.I)):
        return frozenset({"Windows"})
    if groups & {"aws", "aws_cloudtrail", "amazon"}:
        return frozenset({"IaaS"})
    if "office365" in groups:
        return frozenset({"Office Suite", "SaaS", "Identity Provider"})
    if "github" in groups:
        return frozenset({"SaaS"})
    if groups & {"docker", "docker-service"}:
        return frozenset({"Containers", "Linux"})
    return frozenset({"Linux"})


def _family_sources(alert: NormalizedAlert) -> tuple[str, ...]:
    groups = set(alert.rule_groups) | {alert.decoder or ""}
    return tuple(s for family, sources in _FAMILY_LOG_SOURCES if family & groups
                 for s in sources)


def _technique(tid: str, source: str, evidence: str, **extra: object) -> AttackTechnique:
    found = catalog.technique(tid)
    name, tactics = found if found else (tid, ())
    return AttackTechnique(id=tid, name=name, tactics=list(tactics), source=source,  # type: ignore[arg-type]
                           evidence=evidence, **extra)  # type: ignore[arg-type]


def wazuh_techniques(alert: NormalizedAlert) -> list[AttackTechnique]:
    result = []
    for raw_id in alert.wazuh_mitre_ids:
        tid = raw_id.strip().upper()
        evidence = f"rule {alert.rule_id} mitre"
        state, target = catalog.status(tid)
        if state == "revoked" and target:
            result.append(_technique(target, "wazuh", f"{evidence} {tid}, revoked by {target}",
                                     status="revoked", replaces=tid))
        elif state == "revoked":
            result.append(_technique(tid, "wazuh", f"{evidence} (revoked, no replacement)",
                                     status="revoked"))
        elif state == "unknown":
            result.append(AttackTechnique(id=tid, name=tid, source="wazuh", status="unknown",
                                          evidence=f"{evidence} (not in the ATT&CK catalog)"))
        else:
            result.append(_technique(tid, "wazuh", evidence))
    return result


def runbook_techniques(alert: NormalizedAlert,
                       runbooks: Iterable[Runbook]) -> list[AttackTechnique]:
    """Only ids a runbook scopes to this rule, group or decoder, on this platform."""
    alert_platform = alert_platforms(alert)
    result = []
    for runbook in runbooks:
        for scope in runbook.attack_scope:
            why = scope.applies_to(alert.rule_id, alert.rule_groups, alert.decoder)
            if why is None:
                continue
            for tid in scope.ids:
                if catalog.platforms(tid) & alert_platform:
                    result.append(_technique(tid, "runbook",
                                             f"runbook {runbook.slug} scopes {why}"))
    return result


@dataclass(frozen=True)
class ModelIds:
    ids: list[str]
    cited_passages: Sequence[tuple[str, str]]  # (chunk id, text) cited in the prompt
    established: Sequence[str]  # ids already kept (Wazuh, runbook)


def model_evidence(ctx: CheckContext, tid: str, claim: ModelIds) -> str | None:
    """Why a model id may stay, or None: named in a cited passage, or a refinement
    (parent/sub-technique) of an established id whose platforms and data sources fit."""
    for chunk_id, text in claim.cited_passages:
        if re.search(rf"\b{re.escape(tid)}\b(?!\.)", text):
            return f"named in cited passage {chunk_id}"
    family = {t.split(".")[0] for t in claim.established}
    if tid.split(".")[0] not in family:
        return None
    platforms = alert_platforms(ctx.alert)
    sources = _family_sources(ctx.alert)
    for analytic_platforms, name in catalog.log_sources(tid):
        if analytic_platforms & platforms and name.startswith(sources):
            return f"refines {tid.split('.')[0]}; {name} on {'/'.join(sorted(platforms))} fits"
    return None


def no_prompt_examples(ctx: CheckContext, claim: ModelIds) -> str | None:
    echoed = [t for t in claim.ids if t.upper() in ctx.prompt_text.upper()]
    return f"ids from the prompt itself: {', '.join(echoed)}" if echoed else None


def in_catalog(ctx: CheckContext, claim: ModelIds) -> str | None:
    bad = [t for t in claim.ids if catalog.technique(t) is None]
    return f"not valid ATT&CK techniques: {', '.join(bad)}" if bad else None


def has_evidence(ctx: CheckContext, claim: ModelIds) -> str | None:
    bad = [t for t in claim.ids if catalog.technique(t) is not None
           and model_evidence(ctx, t.upper(), claim) is None]
    return (f"no evidence in the alert or a cited passage for: {', '.join(bad)}"
            if bad else None)


def model_techniques(ctx: CheckContext, claim: ModelIds) -> list[AttackTechnique]:
    """The model ids that pass every check (one by one: a bad id does not sink a good)."""
    kept = []
    for raw in claim.ids:
        tid = raw.strip().upper()
        if tid in ctx.prompt_text.upper() or catalog.technique(tid) is None:
            continue
        evidence = model_evidence(ctx, tid, claim)
        if evidence:
            kept.append(_technique(tid, "model", evidence))
    return kept


def merge(*groups: Iterable[AttackTechnique]) -> list[AttackTechnique]:
    """First source wins (Wazuh, runbook, model)."""
    merged: dict[str, AttackTechnique] = {}
    for group in groups:
        for technique in group:
            merged.setdefault(technique.id, technique)
    return list(merged.values())


CHECKS = (("attack.in_catalog", in_catalog), ("attack.not_prompt_example", no_prompt_examples),
          ("attack.has_evidence", has_evidence))
