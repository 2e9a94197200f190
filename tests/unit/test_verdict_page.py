"""The verdict page shows the facts first and every rejected model claim with its reason."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request

from pipeline.analysis.facts import build_facts
from pipeline.web.console.app import make_templates
from tests.unit.verdict_alerts import sample

HOSTILE = "<script>alert(1)</script>"


def test_facts_first_and_each_failed_check_with_its_reason() -> None:
    facts = build_facts(sample("5710"))
    verdict = {
        "id": 7, "alert_id": "a", "rule_id": "5710", "rule_level": 5, "severity": "low",
        "severity_source": "rule level 5 band", "status": "needs_review",
        "review_reason": "summary.no_contradiction: ...", "analyst_status": "new",
        "seen_count": 1, "reused_from": None, "last_seen_at": None, "agent_name": None,
        "created_at": datetime.now(UTC), "model_name": "m", "prompt_version": "v",
        "input_tokens": 1, "output_tokens": 1, "latency_ms": 1, "confidence": 0.55,
        "summary": facts.sentence, "next_steps": ["lastb -i"], "passages": [],
        "attack": [{"id": "T1565.001", "name": "Stored Data Manipulation", "tactics": [],
                    "source": "wazuh", "status": "revoked", "replaces": "T1492",
                    "evidence": "rule 550 mitre T1492, revoked by T1565.001"}],
        "similar": [], "feedback": [], "audit": [], "alert": {}, "provenance": {},
        "facts": facts.model_dump(),
        "checks": [{"name": "summary.no_contradiction", "claim": "summary", "passed": False,
                    "reason": f"says success but the alert is a failure {HOSTILE}"},
                   {"name": "summary.no_placeholder", "claim": "summary", "passed": True,
                    "reason": None}],
    }
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": [],
                       "query_string": b"", "app": None})
    html = make_templates().get_template("verdict.html").render(
        request=request, v=verdict, severities=["low"], user=None, csrf="")
    assert html.index('id="facts"') < html.index('id="summary"')
    failed = html.split('id="failed-checks"', 1)[1].split("</ul>", 1)[0]
    assert "summary.no_contradiction" in failed and "says success" in failed
    assert "summary.no_placeholder" not in failed
    assert "<script>alert" not in html
    assert "replaces <code>T1492</code>" in html and "revoked by T1565.001" in html
