"""explain: an enriched alert → a Verdict, through the router. Facts stay facts: Wazuh's
ATT&CK ids are always kept, severity moves at most one band from the rule level, and a
reply that fails validation twice becomes a "needs review" verdict, never a crash."""

from __future__ import annotations

import json

import structlog
from pydantic import ValidationError

from pipeline import attack
from pipeline.prompt import PROMPT_VERSION, RESPONSE_FORMAT, build_messages
from pipeline.router import ChatRequest, Completion, Router
from pipeline.severity import band_for_level, bounded_severity
from schemas.messages import EnrichedAlert, RunbookCitation
from schemas.verdict import AttackTechnique, LLMVerdict, Verdict

log = structlog.get_logger(__name__)

RUNBOOK_CITATION_MIN_SCORE = 0.35
# Groups shared by unrelated rules say nothing about which runbook applies.
GENERIC_GROUPS = frozenset({"syslog", "windows", "ossec", "local", "json", "web", "attack",
                            "accesslog", "audit", "amazon", "pci_dss"})


def merge_attack(wazuh_ids: list[str], runbook_ids: list[str],
                 model_ids: list[str]) -> list[AttackTechnique]:
    merged: dict[str, AttackTechnique] = {}
    for source, ids in (("wazuh", wazuh_ids), ("runbook", runbook_ids), ("model", model_ids)):
        for raw_id in ids:
            tid = raw_id.strip().upper()
            if tid in merged:
                continue
            found = attack.technique(tid)
            if found is None:
                if source == "wazuh":  # Wazuh's mapping is a fact even if the catalog moved
                    merged[tid] = AttackTechnique(id=tid, name=tid, source="wazuh")
                else:
                    log.info("attack_id_dropped", technique=tid, source=source)
                continue
            name, tactics = found
            merged[tid] = AttackTechnique(id=tid, name=name, tactics=list(tactics),
                                          source=source)  # type: ignore[arg-type]
    return list(merged.values())


def _runbook_matches(citation: RunbookCitation, rule_id: str, groups: list[str]) -> bool:
    return rule_id in citation.wazuh_rules or bool(
        set(citation.wazuh_groups) & (set(groups) - GENERIC_GROUPS))


def _parse(completion: Completion) -> LLMVerdict:
    return LLMVerdict.model_validate(json.loads(completion.text))


async def explain(enriched: EnrichedAlert, router: Router, *, max_tokens: int,
                  temperature: float = 0.0,
                  extra_body: dict[str, object] | None = None) -> Verdict:
    alert = enriched.alert
    messages = build_messages(enriched)
    request = ChatRequest(tenant_id=alert.tenant_id, messages=messages, max_tokens=max_tokens,
                          temperature=temperature,
                          priority="batch" if alert.priority == "batch" else "standard",
                          alert_id=alert.alert_id, response_format=RESPONSE_FORMAT,
                          extra_body=dict(extra_body or {}))
    completions: list[Completion] = []
    parsed: LLMVerdict | None = None
    error = ""
    for _attempt in range(2):  # one repair retry
        completion = await router.complete(request)
        completions.append(completion)
        try:
            parsed = _parse(completion)
            break
        except (json.JSONDecodeError, ValidationError) as exc:
            error = f"model reply failed validation: {str(exc).splitlines()[0]}"
            log.warning("verdict_invalid", alert_id=alert.alert_id, error=error,
                        finish_reason=completion.finish_reason)
            request = ChatRequest(**{**request.__dict__, "temperature": 0.3})

    cited = [c for c in enriched.runbooks if c.score >= RUNBOOK_CITATION_MIN_SCORE]
    # A runbook's ATT&CK ids are facts about this alert only when the runbook is written
    # for its rule or its groups; similarity alone is not enough.
    runbook_ids = [tid for c in cited if _runbook_matches(c, alert.rule_id, alert.rule_groups)
                   for tid in c.attack_ids]
    common: dict[str, object] = {
        "tenant_id": alert.tenant_id, "alert_id": alert.alert_id, "rule_id": alert.rule_id,
        "rule_level": alert.rule_level, "model_name": router.model_name,
        "prompt_version": PROMPT_VERSION, "cited_chunks": [c.chunk_id for c in cited],
        "input_tokens": sum(c.input_tokens for c in completions),
        "output_tokens": sum(c.output_tokens for c in completions),
        "latency_ms": sum(c.latency_ms for c in completions),
    }
    if parsed is None:
        return Verdict.model_validate({
            **common, "severity": band_for_level(alert.rule_level),
            "severity_source": f"rule level {alert.rule_level} band (model failed)",
            "summary": alert.rule_description or "(no description)",
            "attack": merge_attack(alert.wazuh_mitre_ids, runbook_ids, []),
            "next_steps": [], "status": "needs_review", "review_reason": error})
    severity, source = bounded_severity(alert.rule_level, parsed.severity)
    return Verdict.model_validate({
        **common, "severity": severity, "severity_source": source,
        "summary": parsed.summary.strip(),
        "attack": merge_attack(alert.wazuh_mitre_ids, runbook_ids, parsed.attack_ids),
        "next_steps": [s.strip() for s in parsed.next_steps if s.strip()],
        "status": "explained"})
