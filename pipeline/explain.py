"""explain: an enriched alert → a Verdict, through the router. Facts stay facts: Wazuh's
ATT&CK ids are always kept, severity moves at most one band from the rule level, and a
reply that fails validation twice becomes a "needs review" verdict, never a crash."""

from __future__ import annotations

import json
from typing import Any

import structlog
from pydantic import ValidationError

from pipeline import attack
from pipeline.prompt import PROMPT_VERSION, RESPONSE_FORMAT, Prompt, build_prompt
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
                 model_ids: list[str]) -> tuple[list[AttackTechnique], int]:
    """Techniques by source (Wazuh first), validated against the catalog; and how many
    runbook/model ids were dropped as unknown."""
    merged: dict[str, AttackTechnique] = {}
    dropped = 0
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
                    dropped += 1
                    log.info("attack_id_dropped", technique=tid, source=source)
                continue
            name, tactics = found
            merged[tid] = AttackTechnique(id=tid, name=name, tactics=list(tactics),
                                          source=source)  # type: ignore[arg-type]
    return list(merged.values()), dropped


def runbook_matches(citation: RunbookCitation, rule_id: str, groups: list[str]) -> bool:
    return rule_id in citation.wazuh_rules or bool(
        set(citation.wazuh_groups) & (set(groups) - GENERIC_GROUPS))


def confidence(*, parsed_first_try: bool, grounded: bool, model_agrees: bool) -> float:
    """A plain heuristic, documented so an analyst can read it: 0.4 base, +0.2 valid on
    the first try, +0.2 a runbook written for this rule/groups was cited, +0.2 the model's
    severity agrees with the rule band."""
    return round(0.4 + 0.2 * parsed_first_try + 0.2 * grounded + 0.2 * model_agrees, 2)


def _parse(completion: Completion) -> LLMVerdict:
    return LLMVerdict.model_validate(json.loads(completion.text))


async def explain(enriched: EnrichedAlert, router: Router, *, max_tokens: int,
                  temperature: float = 0.0, extra_body: dict[str, object] | None = None,
                  context_budget: int = 700, alert_budget: int = 600) -> Verdict:
    alert = enriched.alert
    prompt = build_prompt(enriched, router.count_text, context_budget=context_budget,
                          alert_budget=alert_budget)
    request = ChatRequest(tenant_id=alert.tenant_id, messages=prompt.messages,
                          max_tokens=max_tokens, temperature=temperature,
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
    return _verdict(enriched, prompt, router.model_name, completions, parsed, error)


def _verdict(enriched: EnrichedAlert, prompt: Prompt, model_name: str,
             completions: list[Completion], parsed: LLMVerdict | None, error: str) -> Verdict:
    alert = enriched.alert
    cited = [c for c in prompt.runbooks if c.score >= RUNBOOK_CITATION_MIN_SCORE]
    # A runbook's ATT&CK ids are facts about this alert only when the runbook is written
    # for its rule or its groups; similarity alone is not enough.
    grounded = [c for c in cited if runbook_matches(c, alert.rule_id, alert.rule_groups)]
    runbook_ids = [tid for c in grounded for tid in c.attack_ids]
    attack_list, dropped = merge_attack(alert.wazuh_mitre_ids, runbook_ids,
                                        parsed.attack_ids if parsed else [])
    band = band_for_level(alert.rule_level)
    common: dict[str, Any] = {
        "tenant_id": alert.tenant_id, "alert_id": alert.alert_id, "rule_id": alert.rule_id,
        "rule_level": alert.rule_level, "model_name": model_name,
        "prompt_version": PROMPT_VERSION, "cited_chunks": [c.chunk_id for c in cited],
        "retrieval_ids": [c.chunk_id for c in enriched.runbooks]
                         + [f"verdict:{s.alert_id}" for s in enriched.similar],
        "input_tokens": sum(c.input_tokens for c in completions),
        "output_tokens": sum(c.output_tokens for c in completions),
        "latency_ms": sum(c.latency_ms for c in completions),
        "fingerprint": alert.fingerprint, "incident_key": alert.incident_key,
        "attack": attack_list, "attack_dropped": dropped,
    }
    provenance: dict[str, object] = {
        "attack": {src: [t.id for t in attack_list if t.source == src]
                   for src in ("wazuh", "runbook", "model")},
        "runbooks": [c.chunk_id for c in grounded],
        "similar_verdicts": [s.alert_id for s in prompt.similar],
        "alert_truncated": prompt.alert_truncated,
        "llm_calls": len(completions),
    }
    if parsed is None:
        return Verdict.model_validate({
            **common, "severity": band,
            "severity_source": f"rule level {alert.rule_level} band (model failed)",
            "summary": alert.rule_description or "(no description)", "next_steps": [],
            "status": "needs_review", "review_reason": error, "confidence": 0.1,
            "provenance": {**provenance, "severity": "wazuh", "summary": "wazuh",
                           "next_steps": "none"}})
    severity, source = bounded_severity(alert.rule_level, parsed.severity or band)
    return Verdict.model_validate({
        **common, "severity": severity, "severity_source": source,
        "summary": parsed.summary.strip(),
        "next_steps": [s.strip() for s in parsed.next_steps if s.strip()],
        "status": "explained",
        "confidence": confidence(parsed_first_try=len(completions) == 1,
                                 grounded=bool(grounded), model_agrees=severity == band),
        "provenance": {**provenance, "severity": "wazuh" if severity == band else "model",
                       "summary": "model", "next_steps": "model"}})
