"""explain: an enriched alert → a Verdict, through the router. Facts first, every model
claim checked before it is shown.

1. `facts` (pipeline/analysis/facts.py) are built without the model: they are right
   whatever it says.
2. Next steps are the investigation commands of the runbook written for this rule (or the
   generic steps of its family), filled in with the alert's values; the model only picks
   and orders them by number.
3. The model writes a short narrative (and, for a "large" task, may propose a severity
   with its reason and ATT&CK ids). Each claim goes through the named checks of
   pipeline/analysis/verdict_checks; a rejected claim is not shown (the fact stands) and its
   reason is recorded in `checks`.

Quality gate: `needs_review` when a check failed, the model failed, or no runbook matched.

Confidence (0–1) is the trust in what the verdict shows, from the checks that passed:
    0.5·S + 0.2·N + 0.15·V + 0.15·A
    S  summary: when the facts sentence is shown, 1 if every value it names is a whole
       field of the alert, 0.8 if one was cut out of a longer field by a parser
       (facts.parsed_values: Defender's resource list, a CVE id found in the log line) —
       built without the model, but a parser can cut in the wrong place; for a model
       narrative that passed every check, 0.2 + 0.6·g, g = min(1, distinct alert entities
       it names / 2) — a narrative is never proven right, one that restates more of the
       alert is less likely to be wrong; × 0.75 when another claim of the model was
       rejected (the model was wrong about this alert once already)
    N  next steps: 1 from the runbook written for the rule, 0.6 generic
    V  severity: 1 the Wazuh band, 0.8 moved by the model with a fact
    A  ATT&CK: 1 Wazuh and runbook ids only, 0.8 when a model id is shown
The model's failures show in `status` (needs_review) and `checks`, not here: a verdict
whose claims were all rejected shows only facts and steps, and those are right.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from pydantic import ValidationError

from pipeline.analysis import attack
from pipeline.analysis.facts import build_facts, parsed_values
from pipeline.analysis.prompt import PROMPT_VERSION, Prompt, TaskSize, build_prompt
from pipeline.analysis.runbooks import (
    DEFAULT_FOLDER,
    GENERIC_GROUPS,
    Runbook,
    chunk_runbook,
    library,
    matching,
)
from pipeline.analysis.verdict_checks import attack as attack_checks
from pipeline.analysis.verdict_checks import next_steps as step_checks
from pipeline.analysis.verdict_checks import passed, run
from pipeline.analysis.verdict_checks import severity as severity_checks
from pipeline.analysis.verdict_checks import summary as summary_checks
from pipeline.analysis.verdict_checks.context import CheckContext
from pipeline.router import ChatRequest, Completion, Router
from schemas.messages import EnrichedAlert, NormalizedAlert, RunbookCitation
from schemas.verdict import AttackTechnique, CheckResult, LLMVerdict, Verdict

log = structlog.get_logger(__name__)

RUNBOOK_CITATION_MIN_SCORE = 0.35
OFFERED_STEPS = {"small": 6, "large": 8}
FACTS_PARSED_TRUST = 0.8  # the facts sentence names a value a parser cut out of a field
__all__ = ["GENERIC_GROUPS", "confidence", "explain", "merge_attack", "runbook_matches"]


def merge_attack(wazuh_ids: list[str], runbook_ids: list[str],
                 model_ids: list[str]) -> tuple[list[AttackTechnique], int]:
    """Techniques by source (Wazuh first), validated against the catalog; and how many
    runbook/model ids were dropped as unknown. Wazuh's ids are never dropped: a revoked
    one is replaced by what revoked it (`replaces` keeps the original), an unknown one is
    kept marked "unknown"."""
    merged: dict[str, AttackTechnique] = {}
    dropped = 0
    for raw_id in wazuh_ids:
        tid = raw_id.strip().upper()
        state, target = attack.status(tid)
        shown = target if state == "revoked" and target else tid
        found = attack.technique(shown)
        name, tactics = found if found else (shown, ())
        merged.setdefault(shown, AttackTechnique(
            id=shown, name=name, tactics=list(tactics), source="wazuh", status=state,  # type: ignore[arg-type]
            replaces=tid if shown != tid else None, evidence="rule mitre"))
    for source, ids in (("runbook", runbook_ids), ("model", model_ids)):
        for raw_id in ids:
            tid = raw_id.strip().upper()
            if tid in merged:
                continue
            found = attack.technique(tid)
            if found is None:
                dropped += 1
                log.info("attack_id_dropped", technique=tid, source=source)
                continue
            merged[tid] = AttackTechnique(id=tid, name=found[0], tactics=list(found[1]),
                                          source=source)  # type: ignore[arg-type]
    return list(merged.values()), dropped


def runbook_matches(citation: RunbookCitation, rule_id: str, groups: list[str]) -> bool:
    return rule_id in citation.wazuh_rules or bool(
        set(citation.wazuh_groups) & (set(groups) - GENERIC_GROUPS))


def confidence(*, grounding: float | None, other_claim_rejected: bool = False,
               generic_steps: bool = False, severity_moved: bool = False,
               model_attack_shown: bool = False, facts_parsed: bool = False) -> float:
    """The formula in the module docstring; `grounding` None = the facts sentence shown,
    `facts_parsed`: it names a value a parser cut out of a longer field."""
    facts_trust = FACTS_PARSED_TRUST if facts_parsed else 1.0
    summary = facts_trust if grounding is None else (
        (0.2 + 0.6 * min(grounding, 1.0)) * (0.75 if other_claim_rejected else 1.0))
    score = (0.5 * summary + 0.2 * (0.6 if generic_steps else 1.0)
             + 0.15 * (0.8 if severity_moved else 1.0)
             + 0.15 * (0.8 if model_attack_shown else 1.0))
    return round(score, 2)


def grounding(ctx: CheckContext, narrative: str) -> float:
    """How much of the alert a narrative restates: distinct entity values named / 2."""
    lowered = narrative.lower()
    named = {v.lower() for v in ctx.entity_values() if v.lower() in lowered}
    return min(1.0, len(named) / 2)


def _parse(completion: Completion) -> LLMVerdict:
    return LLMVerdict.model_validate(json.loads(completion.text))


def _matched_runbooks(enriched: EnrichedAlert,
                      folder: Path) -> list[tuple[Runbook, str]]:
    """Runbooks written for this rule (first) or its groups, best retrieved first."""
    alert = enriched.alert
    scores = {c.runbook: c.score for c in sorted(enriched.runbooks, key=lambda c: c.score)}
    found = matching(library(folder), alert.rule_id, alert.rule_groups)
    return sorted(found, key=lambda pair: (not pair[1].startswith("rule"),
                                           -scores.get(pair[0].slug, 0.0)))


OVERVIEW_HEADING = "what this alert means"


def with_overview(enriched: EnrichedAlert, matched: Sequence[Runbook]) -> EnrichedAlert:
    """The alert with the "What this alert means" passage of the runbook written for it
    added when retrieval brought none: similarity may rank only its commands and response
    sections (which the prompt leaves out), yet that runbook explains this alert best."""
    if not matched:
        return enriched
    runbook = matched[0]
    if any(c.runbook == runbook.slug and c.heading.lower() == OVERVIEW_HEADING
           for c in enriched.runbooks):
        return enriched
    chunk = next((c for c in chunk_runbook(runbook)
                  if c.heading.lower() == OVERVIEW_HEADING), None)
    if chunk is None:
        return enriched
    score = max([c.score for c in enriched.runbooks if c.runbook == runbook.slug],
                default=RUNBOOK_CITATION_MIN_SCORE)
    overview = RunbookCitation(
        chunk_id=chunk.chunk_id, runbook=runbook.slug, title=runbook.title,
        heading=chunk.heading, attack_ids=runbook.attack_ids,
        wazuh_groups=runbook.wazuh_groups, wazuh_rules=runbook.wazuh_rules,
        score=score, text=chunk.content)
    return enriched.model_copy(update={"runbooks": [*enriched.runbooks, overview]})


def _grounded_steps(alert: NormalizedAlert, runbooks: Sequence[Runbook],
                    limit: int) -> list[step_checks.GroundedStep]:
    for runbook in runbooks:
        steps = step_checks.runbook_steps(runbook, alert)
        if steps:
            return steps[:limit]
    return step_checks.generic_steps(alert)[:limit]


async def explain(enriched: EnrichedAlert, router: Router, *, max_tokens: int,
                  temperature: float = 0.0, extra_body: dict[str, object] | None = None,
                  context_budget: int = 700, alert_budget: int = 600,
                  task_size: TaskSize = "small",
                  runbooks_folder: Path = DEFAULT_FOLDER) -> Verdict:
    alert = enriched.alert
    matched = _matched_runbooks(enriched, runbooks_folder)
    steps = _grounded_steps(alert, [r for r, _ in matched], OFFERED_STEPS[task_size])
    facts = build_facts(alert)
    prompt = build_prompt(with_overview(enriched, [r for r, _ in matched]),
                          router.count_text, context_budget=context_budget,
                          alert_budget=alert_budget, steps=[s.text for s in steps],
                          band=facts.band, task_size=task_size)
    request = ChatRequest(tenant_id=alert.tenant_id, messages=prompt.messages,
                          max_tokens=max_tokens, temperature=temperature,
                          priority="batch" if alert.priority == "batch" else "standard",
                          alert_id=alert.alert_id, response_format=prompt.response_format,
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
    ctx = CheckContext(alert=alert, facts=facts, prompt_text=prompt.instructions)
    return _verdict(enriched, ctx, prompt, router.model_name, completions, parsed, error,
                    matched, steps, task_size)


@dataclass
class _Claims:
    """What survived the checks of the model's claims; the facts stand for the rest."""

    checks: list[CheckResult] = field(default_factory=list)
    passed: dict[str, bool] = field(default_factory=dict)
    explanation: str | None = None
    severity: str = ""
    severity_source: str = ""
    model_attack: list[AttackTechnique] = field(default_factory=list)
    chosen: list[step_checks.GroundedStep] = field(default_factory=list)

    def record(self, claim: str, results: list[CheckResult]) -> bool:
        self.checks += results
        self.passed[claim] = passed(results)
        return self.passed[claim]


def _check_claims(ctx: CheckContext, prompt: Prompt, parsed: LLMVerdict | None,
                  steps: list[step_checks.GroundedStep],
                  established: list[AttackTechnique]) -> _Claims:
    facts = ctx.facts
    claims = _Claims(severity=facts.band, severity_source=f"rule level {facts.level} band",
                     chosen=step_checks.chosen(steps, [], passed=False))
    if parsed is None:
        return claims
    narrative = parsed.summary.strip()
    if claims.record("summary", run("summary", summary_checks.CHECKS, ctx, narrative)):
        claims.explanation = narrative
    if parsed.severity is not None:
        claim = severity_checks.SeverityClaim(parsed.severity, parsed.severity_reason)
        ok = claims.record("severity", run("severity", severity_checks.CHECKS, ctx, claim))
        claims.severity, claims.severity_source = severity_checks.final_severity(ctx, claim, ok)
    if parsed.attack_ids:
        model_ids = attack_checks.ModelIds(
            ids=[t.strip().upper() for t in parsed.attack_ids],
            cited_passages=[(c.chunk_id, c.text) for c in prompt.runbooks],
            established=[t.id for t in established])
        claims.record("attack", run("attack", attack_checks.CHECKS, ctx, model_ids))
        claims.model_attack = attack_checks.model_techniques(ctx, model_ids)
    if parsed.steps:
        ok = claims.record("next_steps", run("next_steps", step_checks.CHECKS, ctx,
                                             (parsed.steps, len(steps))))
        claims.chosen = step_checks.chosen(steps, parsed.steps, ok)
    return claims


def _provenance(prompt: Prompt, claims: _Claims, attack_list: list[AttackTechnique],
                matched: list[tuple[Runbook, str]], completions: list[Completion],
                task_size: TaskSize, band: str) -> dict[str, object]:
    return {
        "attack": {src: [t.id for t in attack_list if t.source == src]
                   for src in ("wazuh", "runbook", "model")},
        "runbooks": [f"{r.slug} ({why})" for r, why in matched],
        "similar_verdicts": [s.alert_id for s in prompt.similar],
        "alert_truncated": prompt.alert_truncated,
        "llm_calls": len(completions),
        "summary": "model" if claims.explanation else "facts",
        "severity": "wazuh" if claims.severity == band else "model",
        "next_steps": "runbook" if matched else "generic",
        "next_steps_sources": [s.source for s in claims.chosen],
        "task_size": task_size,
    }


def _verdict(enriched: EnrichedAlert, ctx: CheckContext, prompt: Prompt, model_name: str,
             completions: list[Completion], parsed: LLMVerdict | None, error: str,
             matched: list[tuple[Runbook, str]],
             steps: list[step_checks.GroundedStep], task_size: TaskSize) -> Verdict:
    alert, facts = enriched.alert, ctx.facts
    runbooks = [r for r, _ in matched]
    cited = [c for c in prompt.runbooks if c.score >= RUNBOOK_CITATION_MIN_SCORE]
    wazuh = attack_checks.wazuh_techniques(alert)
    scoped = attack_checks.runbook_techniques(alert, runbooks)
    claims = _check_claims(ctx, prompt, parsed, steps, wazuh + scoped)
    attack_list = attack_checks.merge(wazuh, scoped, claims.model_attack)
    reasons = [f"{c.name}: {c.reason}" for c in claims.checks if not c.passed]
    if parsed is None:
        reasons.insert(0, error)
    if not runbooks:
        reasons.append("no runbook is written for this rule")
    cited_chunks = list(dict.fromkeys([c.chunk_id for c in cited]
                                      + [s.source for s in claims.chosen
                                         if not s.source.startswith("generic:")]))
    proposed = len(parsed.attack_ids) if parsed else 0
    return Verdict.model_validate({
        "tenant_id": alert.tenant_id, "alert_id": alert.alert_id, "rule_id": alert.rule_id,
        "rule_level": alert.rule_level, "model_name": model_name,
        "prompt_version": PROMPT_VERSION, "cited_chunks": cited_chunks,
        "retrieval_ids": [c.chunk_id for c in enriched.runbooks]
                         + [f"verdict:{s.alert_id}" for s in enriched.similar],
        "input_tokens": sum(c.input_tokens for c in completions),
        "output_tokens": sum(c.output_tokens for c in completions),
        "latency_ms": sum(c.latency_ms for c in completions),
        "fingerprint": alert.fingerprint, "incident_key": alert.incident_key,
        "attack": attack_list, "attack_dropped": proposed - len(claims.model_attack),
        "severity": claims.severity,
        "severity_source": claims.severity_source + (" (model failed)" if parsed is None else ""),
        "summary": claims.explanation or facts.sentence, "explanation": claims.explanation,
        "next_steps": [s.text for s in claims.chosen],
        "status": "needs_review" if reasons else "explained",
        "review_reason": "; ".join(reasons) or None,
        "confidence": confidence(
            grounding=grounding(ctx, claims.explanation) if claims.explanation else None,
            other_claim_rejected=any(not ok for c, ok in claims.passed.items()
                                     if c != "summary"),
            generic_steps=not runbooks, severity_moved=claims.severity != facts.band,
            model_attack_shown=bool(claims.model_attack),
            facts_parsed=bool(parsed_values(alert, facts))),
        "facts": facts, "checks": claims.checks,
        "provenance": _provenance(prompt, claims, attack_list, matched, completions,
                                  task_size, facts.band),
    })
