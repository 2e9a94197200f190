"""The Wazuh write-back shows the facts first, and the claims the checks rejected."""

from __future__ import annotations

import json

from pipeline.analysis.facts import build_facts
from pipeline.sources.writeback import writeback_event
from tests.unit.verdict_alerts import sample


def test_facts_first_and_rejected_claims() -> None:
    facts = build_facts(sample("5712"))
    verdict = {"tenant_id": "t", "alert_id": "1.1", "rule_id": "5712", "rule_level": 10,
               "severity": "medium", "status": "needs_review", "summary": facts.sentence,
               "attack": [{"id": "T1110"}], "next_steps": ["lastb -i"],
               "facts": facts.model_dump(),
               "checks": [{"name": "summary.no_placeholder", "claim": "summary",
                           "passed": False, "reason": "template placeholder"},
                          {"name": "summary.not_empty", "claim": "summary", "passed": True,
                           "reason": None}]}
    fields = json.loads(writeback_event(verdict).split(b":", 2)[2])["secanalyst"]
    assert next(iter(fields)) == "facts" and fields["facts"] == facts.sentence
    assert fields["rejected_claims"] == ["summary.no_placeholder: template placeholder"]


def test_a_verdict_without_facts_still_writes() -> None:
    fields = json.loads(writeback_event({"tenant_id": "t", "alert_id": "1"})
                        .split(b":", 2)[2])["secanalyst"]
    assert fields["facts"] == "" and fields["rejected_claims"] == []
