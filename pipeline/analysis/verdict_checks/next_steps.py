"""Next steps are never the model's words: each is a command or query of a cited
runbook's "Investigation steps" section, filled in with this alert's values; the model may
only choose and order them by number. With no runbook for the rule, the generic steps of
the rule's family (a small table below) are used."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.analysis.runbooks import Runbook
from pipeline.analysis.verdict_checks.context import CheckContext
from schemas.messages import NormalizedAlert

MAX_STEPS = 5


@dataclass(frozen=True)
class GroundedStep:
    text: str
    source: str  # chunk id of the passage, or "generic:<family>"


def alert_values(alert: NormalizedAlert) -> dict[str, str | None]:
    """The values a runbook's examples stand for."""
    e = alert.entities
    hashes = e.hashes
    return {"src_ip": e.src_ip, "dst_ip": e.dst_ip, "agent": alert.agent_name,
            "user": e.dst_user or e.src_user, "src_user": e.src_user, "dst_user": e.dst_user,
            "file": e.file_path, "process": e.process, "container": e.container,
            "cve": e.cve, "package": e.package, "cloud_user": _cloud_user(e.cloud_identity),
            "cloud_action": e.cloud_action, "malware": e.malware, "url": e.url,
            "hash": hashes.get("sha256") or hashes.get("sha1") or hashes.get("md5")}


def _cloud_user(identity: str | None) -> str | None:
    return identity.rsplit("/", 1)[-1] if identity else None


def runbook_steps(runbook: Runbook, alert: NormalizedAlert) -> list[GroundedStep]:
    values = alert_values(alert)
    return [GroundedStep(step, runbook.investigation_chunk_id)
            for step in runbook.filled_steps(values) if step]


# family (any of these groups) → generic steps; {name} is filled from alert_values.
GENERIC_STEPS: tuple[tuple[str, frozenset[str], tuple[str, ...]], ...] = (
    ("authentication", frozenset({"authentication_failed", "authentication_failures",
                                  "authentication_success", "invalid_login", "sshd", "pam"}),
     ("List every authentication event from {src_ip} in the last 24 hours.",
      "Check whether account {user} logged in successfully on agent {agent}.",
      "Review all alerts of agent {agent} in the last hour.")),
    ("file-integrity", frozenset({"syscheck", "rootcheck"}),
     ("Compare {file} with its known-good version or package (hash and owner).",
      "Find who and which process changed {file} on agent {agent} (audit or whodata).",
      "Search the other agents for the same hash {hash}.")),
    ("web", frozenset({"web", "accesslog", "web_scan", "attack", "sql_injection"}),
     ("List every request from {src_ip} in the web server access log.",
      "Check the response codes and sizes returned to {src_ip}.",
      "Review all alerts of agent {agent} in the last hour.")),
    ("vulnerability", frozenset({"vulnerability-detector"}),
     ("Confirm the installed version of {package} on agent {agent}.",
      "Read the vendor advisory for {cve} and plan the update.")),
    ("malware", frozenset({"virustotal", "clamd", "windows_defender", "virus"}),
     ("Check where {file} came from and whether it ran on agent {agent}.",
      "Search the other agents for the same hash {hash}.")),
    ("container", frozenset({"docker", "docker-service"}),
     ("Inspect container {container} and its image on agent {agent}.",)),
    ("cloud", frozenset({"aws", "aws_cloudtrail", "office365", "github"}),
     ("Review the recent activity of {cloud_user} in the provider's audit log.",)),
)
DEFAULT_STEPS: tuple[str, ...] = ("Review all alerts of agent {agent} in the last hour.",
                 "Look for earlier alerts of rule {rule_id} on agent {agent}.")


def generic_steps(alert: NormalizedAlert) -> list[GroundedStep]:
    values = {**alert_values(alert), "rule_id": alert.rule_id}
    groups = set(alert.rule_groups)
    family, templates = "default", DEFAULT_STEPS
    for name, members, steps in GENERIC_STEPS:
        if members & groups:
            family, templates = name, steps
            break
    filled = _fill(templates, values, family)
    return filled or _fill(DEFAULT_STEPS, values, "default")


def _fill(templates: Sequence[str], values: dict[str, str | None],
          family: str) -> list[GroundedStep]:
    filled = []
    for template in templates:
        try:
            text = template.format(**{k: v or "" for k, v in values.items()})
        except (KeyError, IndexError):
            continue
        needed = [k for k in values if "{" + k + "}" in template]
        if all(values.get(k) for k in needed):
            filled.append(GroundedStep(text, f"generic:{family}"))
    return filled


def valid_choice(ctx: CheckContext, choice: tuple[Sequence[int], int]) -> str | None:
    """The model's choice is numbers of offered steps (1-based), each once."""
    picked, offered = choice
    bad = [n for n in picked if not 1 <= n <= offered]
    if bad:
        return f"chose steps that were not offered: {bad} (offered 1–{offered})"
    if len(set(picked)) != len(picked):
        return "chose the same step twice"
    return None


def chosen(steps: Sequence[GroundedStep], picked: Sequence[int],
           passed: bool) -> list[GroundedStep]:
    """The model's order when its choice passed, else the runbook's own order."""
    if passed and picked:
        ordered = [steps[n - 1] for n in picked]
        rest = [s for s in steps if s not in ordered]
        return (ordered + rest)[:MAX_STEPS] if len(ordered) < 2 else ordered[:MAX_STEPS]
    return list(steps[:MAX_STEPS])


CHECKS = (("next_steps.valid_choice", valid_choice),)
