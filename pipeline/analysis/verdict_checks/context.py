"""What every check compares a claim with: the alert, its facts, the prompt's own words."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from schemas.messages import NormalizedAlert
from schemas.verdict import VerdictFacts

_WORD = re.compile(r"[\w./:\\@-]+")


@dataclass
class CheckContext:
    alert: NormalizedAlert
    facts: VerdictFacts
    prompt_text: str = ""  # the system prompt and instructions the model saw
    critical_assets: frozenset[str] = field(default_factory=frozenset)

    @cached_property
    def alert_text(self) -> str:
        """Everything the alert says (lower case): a value the model names must be here."""
        return json.dumps(self.alert.raw, ensure_ascii=False).lower().replace("\\\\", "\\") \
            + " " + json.dumps(self.alert.data, ensure_ascii=False).lower()

    @cached_property
    def untrusted_strings(self) -> list[str]:
        """Attacker-influenced text: log lines and decoded fields, not Wazuh's rule text."""
        return [s for s in [*_strings(self.alert.data), self.alert.full_log or ""] if s]

    def entity_values(self) -> list[str]:
        """The alert's entity values and the short forms an analyst would write."""
        entities = self.alert.entities.model_dump()
        values: list[str] = []
        for key, value in entities.items():
            if key == "hashes":
                values += list(value.values())
            elif value:
                values.append(str(value))
        values += [v for v in (self.facts.agent, self.facts.src_port, self.facts.dst_port)
                   if v]
        short = []
        for value in values:
            # a path or a DOMAIN\user is named by its last part
            tail = re.split(r"[/\\]", value.rstrip("/\\"))[-1]
            if tail and tail != value and len(tail) >= 3:
                short.append(tail)
            if "." in value and not re.match(r"^\d", value):  # host.example.com → host
                short.append(value.split(".")[0])
        return [v for v in values + short if len(v) >= 2]

    def words(self, text: str) -> list[str]:
        return [w.lower() for w in _WORD.findall(text)]


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []
