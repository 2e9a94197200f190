"""Every real Wazuh alert in ../shared/data/wazuh-alerts/alerts.jsonl normalizes, with rule
id, level, agent and timestamp extracted. Runs only where that folder exists (CI has it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.analysis.normalize import normalize

DATA = Path(__file__).parents[2].parent / "shared" / "data" / "wazuh-alerts" / "alerts.jsonl"
LINES = DATA.read_bytes().splitlines() if DATA.exists() else []

pytestmark = [pytest.mark.conformance,
              pytest.mark.skipif(not DATA.exists(), reason=f"{DATA} not present")]


@pytest.mark.parametrize("index", range(len(LINES)) if LINES else [0])
def test_real_alert_normalizes(index: int) -> None:
    line = LINES[index]
    document = json.loads(line)
    alert = normalize(line, tenant_id="conformance")
    assert alert.rule_id and alert.rule_level >= 0
    assert alert.agent_name, "agent not extracted"
    assert alert.timestamp is not None, "timestamp not extracted"
    assert alert.alert_id
    source = document.get("_source", document)
    rule = source.get("rule") or source.get("parameters", {}).get("alert", {}).get("rule")
    assert alert.rule_id == str(rule["id"])
    mitre = (rule.get("mitre") or {}).get("id", [])
    assert alert.wazuh_mitre_ids == mitre
