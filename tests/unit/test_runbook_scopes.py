"""Runbook front matter: ATT&CK ids scoped to rules/groups/decoders, and example values
of the investigation commands replaced per alert."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.analysis.runbooks import RunbookFormatError, fill_step, library, parse_runbook

DOC = """---
title: X
wazuh_rules: ["5712"]
wazuh_groups: [sshd]
attack:
  - {ids: [T1110.001], rules: ["5712"]}
  - {ids: [T1021.004], groups: [sshd], decoders: [sshd]}
  - T1110.003
examples: {src_ip: "203.0.113.45", agent: "web-01.example.com"}
---
## Investigation steps

```
grep 203.0.113.45 /var/log/auth.log
rule.id:5712 AND agent.name:web-01.example.com AND data.srcip:198.51.100.9
# a comment
ss -tnp
```
"""


def test_scopes_examples_and_steps(tmp_path: Path) -> None:
    path = tmp_path / "x.md"
    path.write_text(DOC)
    runbook = parse_runbook(path)
    assert runbook.attack_ids == ["T1110.003", "T1110.001", "T1021.004"]
    first, second = runbook.attack_scope
    assert first.applies_to("5712", [], None) == "rule 5712"
    assert first.applies_to("5710", ["sshd"], "sshd") is None
    assert second.applies_to("1", ["syslog", "sshd"], None) == "group sshd"
    assert second.applies_to("1", ["syslog"], "sshd") == "decoder sshd"
    assert runbook.investigation_steps()[-1] == "ss -tnp"
    filled = runbook.filled_steps({"src_ip": "10.1.2.3", "agent": "db-01"})
    # the query with an example address the front matter does not map is left out
    assert filled == ["grep 10.1.2.3 /var/log/auth.log", None, "ss -tnp"]
    assert runbook.filled_steps({"agent": "db-01"})[0] is None  # no source address


def test_a_scope_needs_rules_groups_or_decoders(tmp_path: Path) -> None:
    path = tmp_path / "x.md"
    path.write_text(DOC.replace('{ids: [T1110.001], rules: ["5712"]}', "{ids: [T1110.001]}"))
    with pytest.raises(RunbookFormatError, match="rules, groups or decoders"):
        parse_runbook(path)


def test_every_runbook_scopes_only_catalog_ids_and_has_investigation_steps() -> None:
    for runbook in library():
        assert runbook.investigation_steps(), runbook.slug
        assert all(t in runbook.attack_ids for s in runbook.attack_scope for t in s.ids)


def test_second_example_of_an_entity() -> None:
    step = fill_step("docker logs payments-api", {"container_2": "payments-api"},
                     {"container": "web"})
    assert step == "docker logs web"
