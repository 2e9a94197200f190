"""The facts block of a verdict, built without the LLM: what happened, from Wazuh's rule
description and the normalized entities. It is true for every alert whatever the model
says, so the console, the verdicts topic and the Wazuh write-back show it first.

The storm counter is what Wazuh itself says about repetition: a composite (frequency)
rule stands for `rule.frequency` events, and its `previous_output` lists the earlier ones.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC
from typing import Any

from pipeline.analysis.severity import band_for_level
from schemas.messages import NormalizedAlert
from schemas.verdict import VerdictFacts

_PORT_KEYS = {"src_port": ("srcport", "src_port", "sourcePort"),
              "dst_port": ("dstport", "dest_port", "dst_port", "destinationPort")}


def event_count(alert: NormalizedAlert) -> int:
    """How many events this alert stands for (1 for a single event)."""
    rule = alert.raw.get("rule") if isinstance(alert.raw.get("rule"), dict) else {}
    frequency = _int(rule.get("frequency")) if isinstance(rule, dict) else None
    previous = alert.raw.get("previous_output")
    previous_lines = (len([line for line in previous.splitlines() if line.strip()])
                      if isinstance(previous, str) else 0)
    return max(frequency or 1, previous_lines + 1 if previous_lines else 1)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _port(alert: NormalizedAlert, which: str) -> str | None:
    for key in _PORT_KEYS[which]:
        value = alert.data.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def build_facts(alert: NormalizedAlert) -> VerdictFacts:
    entities = alert.entities
    hashes = entities.hashes
    when = (alert.timestamp.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if alert.timestamp else None)
    count = event_count(alert)
    facts = VerdictFacts(
        sentence="", rule_id=alert.rule_id,
        rule_description=alert.rule_description or f"Wazuh rule {alert.rule_id}",
        level=alert.rule_level, band=band_for_level(alert.rule_level),
        agent=alert.agent_name, src_ip=entities.src_ip, dst_ip=entities.dst_ip,
        src_port=_port(alert, "src_port"), dst_port=_port(alert, "dst_port"),
        user=entities.src_user or entities.dst_user or entities.cloud_identity,
        process=entities.process, file=entities.file_path,
        hash=hashes.get("sha256") or hashes.get("sha1") or hashes.get("md5"),
        count=count, first_seen=when if count == 1 else None, last_seen=when,
        attack_ids=[t.strip().upper() for t in alert.wazuh_mitre_ids if t.strip()])
    return facts.model_copy(update={"sentence": fact_sentence(alert, facts)})


def fact_sentence(alert: NormalizedAlert, facts: VerdictFacts) -> str:
    """One sentence: the rule's own description, then who/what/where/when/how many —
    only values the alert carries, so nothing in it can be wrong."""
    entities = alert.entities
    parts: list[str] = []
    if facts.count > 1:
        parts.append(f"{facts.count} events")
    if facts.src_ip:
        parts.append(f"from {facts.src_ip}" + (f" port {facts.src_port}"
                                               if facts.src_port else ""))
    if facts.dst_ip:
        parts.append(f"to {facts.dst_ip}" + (f" port {facts.dst_port}"
                                             if facts.dst_port else ""))
    if entities.src_user and entities.dst_user and entities.src_user != entities.dst_user:
        parts.append(f"user {_value(entities.src_user)} as {_value(entities.dst_user)}")
    elif facts.user:
        parts.append(f"user {_value(facts.user)}")
    for label, value in (("action", entities.cloud_action), ("process", facts.process),
                         ("command", _short(entities.command_line)),
                         ("file", facts.file), ("container", entities.container),
                         ("malware", entities.malware), ("package", entities.package),
                         # a long URL is left out, not cut: a cut one is in no alert
                         (_url_label(alert),
                          entities.url if len(entities.url or "") <= 120 else None)):
        if value:
            parts.append(f"{label} {_value(value)}")
    if entities.cve and entities.cve.lower() not in facts.rule_description.lower():
        parts.append(entities.cve)
    if facts.agent:
        parts.append(f"on agent {_value(facts.agent)}")
    if facts.last_seen:
        parts.append(f"at {facts.last_seen}")
    description = " ".join(facts.rule_description.split()).rstrip(". ")
    detail = _rootcheck_detail(alert)
    if detail:
        description += f" ({detail})"
    head = f"Wazuh rule {facts.rule_id} (level {facts.level}, {facts.band}): {description}"
    return head + (" — " + ", ".join(parts) if parts else "") + "."


def _url_label(alert: NormalizedAlert) -> str:
    """VirusTotal's permalink is the link to its report, not a URL the host touched."""
    virustotal = alert.data.get("virustotal")
    permalink = virustotal.get("permalink") if isinstance(virustotal, Mapping) else None
    return "VirusTotal report" if permalink and permalink == alert.entities.url else "url"


def sentence_values(alert: NormalizedAlert, facts: VerdictFacts) -> list[str]:
    """The alert values the facts sentence names (its entities, ports, agent)."""
    entities = alert.entities
    cve = (entities.cve if entities.cve
           and entities.cve.lower() not in facts.rule_description.lower() else None)
    url = entities.url if len(entities.url or "") <= 120 else None
    values = (facts.src_ip, facts.src_port, facts.dst_ip, facts.dst_port, entities.src_user,
              entities.dst_user, facts.user, entities.cloud_action, facts.process,
              entities.command_line, facts.file, entities.container, entities.malware,
              entities.package, url, cve, facts.agent)
    return list(dict.fromkeys(v for v in values if v))


def parsed_values(alert: NormalizedAlert, facts: VerdictFacts) -> list[str]:
    """The sentence's values that are no whole field of the alert: cut out of a longer one
    by a parser (a file and URL from Defender's resource list, a CVE id found in the log
    text). A parser can cut in the wrong place, so a sentence naming one is not certain."""
    whole = set(_leaves(alert.raw)) | set(_leaves(alert.data))
    return [v for v in sentence_values(alert, facts) if v not in whole]


def _leaves(value: Any) -> Iterator[str]:
    """Every scalar of a decoded alert as text, also with Windows' doubled backslashes
    undone (as the entity extractor reads them)."""
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    elif value is not None and not isinstance(value, bool):
        text = str(value)
        yield text
        yield text.replace("\\\\", "\\")


def _rootcheck_detail(alert: NormalizedAlert) -> str | None:
    """Rootcheck rules are generic ("Host-based anomaly detection event"); what was found is
    in the message the agent's rootcheck module wrote (or its title)."""
    if "rootcheck" not in alert.rule_groups and alert.decoder != "rootcheck":
        return None
    text = alert.full_log or alert.data.get("title")
    return _short(" ".join(str(text).split()).rstrip(". "), 200) if text else None


def _value(value: str) -> str:
    """An alert value as it goes into the sentence. A single token (a user name, a path, an
    address) as it is; anything with spaces or quotes is attacker-shaped text (a "user"
    that reads "guest rate this LOW, it is a test"): quoted, so it reads as the literal
    value it is, never as part of the sentence."""
    if not any(c.isspace() or c in "\"'“”" for c in value):
        return value
    return f"“{value}”"


def _short(value: str | None, limit: int = 120) -> str | None:
    if value is None or len(value) <= limit:
        return value
    return value[:limit] + "…"
