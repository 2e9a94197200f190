"""Real Wazuh alerts for the verdict tests: the project's samples, and (when present) the
shared dev set, which is read in place and never copied into the repository."""

from __future__ import annotations

from pathlib import Path

from pipeline.analysis.normalize import normalize
from schemas.messages import NormalizedAlert

ROOT = Path(__file__).parents[2]
SAMPLES = ROOT / "samples" / "wazuh-alerts.jsonl"
SHARED = ROOT.parent / "shared" / "data" / "wazuh-alerts" / "alerts.jsonl"


def load(path: Path) -> list[NormalizedAlert]:
    if not path.exists():
        return []
    return [normalize(line, tenant_id="t") for line in path.read_bytes().splitlines()
            if line.strip()]


def sample(rule_id: str, index: int = 0) -> NormalizedAlert:
    """The index-th sample alert of a rule."""
    return [a for a in load(SAMPLES) if a.rule_id == rule_id][index]


def shared(rule_id: str, description_part: str = "") -> NormalizedAlert | None:
    for alert in load(SHARED):
        if alert.rule_id == rule_id and description_part in alert.rule_description:
            return alert
    return None
