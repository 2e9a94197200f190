"""Checks of the model's narrative. A summary that fails any of them is not shown: the
facts sentence stands and each reason is recorded."""

from __future__ import annotations

import re
from collections.abc import Callable

from pipeline.analysis.verdict_checks.context import CheckContext
from pipeline.analysis.verdict_checks.polarity import contradiction

VERBATIM_WORDS = 8  # a span this long copied from the log is the log talking, not the model
PROMPT_ECHO_WORDS = 5

_STOP = frozenset({
    "the", "a", "an", "and", "or", "of", "to", "in", "on", "for", "from", "with", "by", "at",
    "as", "is", "was", "were", "be", "been", "this", "that", "these", "those", "same",
    "multiple", "detected", "executed", "attempt", "attempts", "alert", "event", "events",
    "system", "user", "file", "host", "agent", "wazuh", "rule", "level", "more", "than",
    "one", "time", "using", "used", "via",
})
_INSTRUCTION = re.compile(
    r"\b(ignore (all |any |the )?(previous|prior|above)|you (must|should|can now|are)"
    r"|as an ai|language model|rate (this|it)|set (the )?severity|mark (this|it) as"
    r"|reply with|respond with|explain this alert|json|system prompt|instructions?"
    r"|assistant|try to guess|awesome|please|summary of the alert"
    r"|up to (four|4) |investigation steps\.)", re.I)
_PLACEHOLDER = re.compile(
    r"\[[^\]]*(insert|your|placeholder|here|summary|message|todo|name|date)[^\]]*\]"
    r"|\{\{[^}]*\}\}|\{[a-z_.]+\}|<[a-z_ ]{3,}>|\bTODO\b|\bTBD\b|lorem ipsum|\bN/A\b|\bxxx+\b",
    re.I)
_VAGUE = re.compile(
    r"\b(in this (answer|response|report|summary)|i will|i'll|i am|here is|as follows"
    r"|step[- ]by[- ]step|detailed explanation|achievements?:"
    r"|this (alert|report|event) (contains|provides|highlights|includes|is about)"
    r" (information|details|an important|critical aspects))", re.I)
_NAME = re.compile(r"\b[A-Z][A-Za-z0-9]*[A-Z][A-Za-z0-9]*\b|\b[A-Z][a-z]{2,}\b")
_COMMON_NAMES = frozenset({
    "ssh", "ip", "ips", "http", "https", "sql", "xss", "url", "cve", "dns", "tcp", "udp",
    "rdp", "api", "os", "id", "pid", "uid", "fim", "ids", "mitre", "wazuh", "linux",
    "windows", "unix", "the", "this", "that", "these", "an", "a", "it", "its", "they",
    "someone", "if", "no", "one", "two", "several", "multiple", "repeated", "failed",
    "successful", "unknown", "possible", "suspicious", "critical", "high", "medium", "low",
    "alert", "attacker", "user", "root", "admin", "file", "host", "server", "system"})
_IPV4 = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b")
_URL = re.compile(r"\b(?:https?|ftp)://[^\s\"'<>)]+", re.I)
_HASH = re.compile(r"\b[0-9a-f]{32}\b|\b[0-9a-f]{40}\b|\b[0-9a-f]{64}\b", re.I)
_IDS = re.compile(r"\bT\d{4}(?:\.\d{3})?\b|\bCVE-\d{4}-\d{4,7}\b|\b\d{4,}\b", re.I)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_USER = re.compile(r"\b(?:user(?:name)?|account|login)\s+['\"`]?([\w.$\\-]{2,})", re.I)
_GENERIC_USER_WORDS = frozenset({"account", "accounts", "name", "names", "that", "with",
                                 "from", "was", "is", "has", "attempted", "tried", "who",
                                 "does", "did", "not", "the", "a", "an", "and", "on", "to",
                                 "of", "in", "for", "failed", "failures", "attempts",
                                 "activity", "session", "login", "logins", "credentials",
                                 "using", "attempt", "which", "without", "by", "as"})


def rule_subject(ctx: CheckContext) -> list[str]:
    """Words that name what the rule is about ("sshd", "brute", "ClamAV", "injection")."""
    description = ctx.facts.rule_description
    words = re.findall(r"[A-Za-z][A-Za-z0-9_-]{3,}", description)
    return [w.lower() for w in words if w.lower() not in _STOP]


def names_an_entity(ctx: CheckContext, text: str) -> str | None:
    """An alert that carries entities must be described by one of them (a narrative that
    only repeats the rule's subject says nothing the facts do not); an alert without any
    entity by the rule's subject."""
    lowered = text.lower()
    values = ctx.entity_values()
    if any(value.lower() in lowered for value in values):
        return None
    if not values and any(re.search(rf"\b{re.escape(word)}", lowered)
                          for word in rule_subject(ctx)):
        return None
    if values:
        return "names no entity of the alert (source, user, file, host, ...)"
    return "names nothing of the alert, not even the rule's subject"


def not_vague(ctx: CheckContext, text: str) -> str | None:
    match = _VAGUE.search(text)
    return f"talks about itself instead of the alert: {match.group(0)!r}" if match else None


def no_foreign_names(ctx: CheckContext, text: str) -> str | None:
    """Names (capitalised or acronyms, not opening a sentence) the alert never mentions —
    "AWS Lambda" on a Docker event, "Surikatana" — are invented."""
    known = ctx.alert_text
    for match in _NAME.finditer(text):
        word = match.group(0)
        start = match.start()
        opening = start == 0 or re.search(r"[.!?:]\s*$", text[:start]) is not None
        if (opening and not word.isupper()) or word.lower() in _COMMON_NAMES:
            continue
        if word.lower() not in known:
            return f"name {word!r} is not in the alert"
    return None


def no_contradiction(ctx: CheckContext, text: str) -> str | None:
    return contradiction(ctx.alert, text)


def no_instruction_text(ctx: CheckContext, text: str) -> str | None:
    match = _INSTRUCTION.search(text)
    return f"instruction-like text: {match.group(0)!r}" if match else None


def no_placeholder(ctx: CheckContext, text: str) -> str | None:
    match = _PLACEHOLDER.search(text)
    return f"template placeholder: {match.group(0)!r}" if match else None


def no_foreign_values(ctx: CheckContext, text: str) -> str | None:
    """Every IP, URL, hash, id, e-mail and user name the text names is in the alert."""
    known = ctx.alert_text + " " + ctx.facts.sentence.lower()
    for kind, pattern in (("IP", _IPV4), ("URL", _URL), ("hash", _HASH), ("id", _IDS),
                          ("e-mail", _EMAIL)):
        for match in pattern.finditer(text):
            value = match.group(0).rstrip(".,;:").lower()
            if value not in known:
                return f"{kind} {match.group(0)!r} is not in the alert"
    for match in _USER.finditer(text):
        name = match.group(1).rstrip(".,;:")
        if name.lower() not in _GENERIC_USER_WORDS and name.lower() not in known:
            return f"user {name!r} is not in the alert"
    return None


def no_verbatim_copy(ctx: CheckContext, text: str) -> str | None:
    """No long span copied from the log or decoded fields (attacker text), and none of
    the prompt's own sentences."""
    words = ctx.words(text)
    spans = {tuple(words[i:i + VERBATIM_WORDS]) for i in range(len(words) - VERBATIM_WORDS + 1)}
    for source in ctx.untrusted_strings:
        source_words = ctx.words(source)
        for i in range(len(source_words) - VERBATIM_WORDS + 1):
            if tuple(source_words[i:i + VERBATIM_WORDS]) in spans:
                return f"copies {VERBATIM_WORDS}+ words of alert text verbatim"
    prompt_words = ctx.words(ctx.prompt_text)
    echo = {tuple(prompt_words[i:i + PROMPT_ECHO_WORDS])
            for i in range(len(prompt_words) - PROMPT_ECHO_WORDS + 1)}
    for i in range(len(words) - PROMPT_ECHO_WORDS + 1):
        if tuple(words[i:i + PROMPT_ECHO_WORDS]) in echo:
            return "copies the prompt's own instructions"
    return None


def not_empty(ctx: CheckContext, text: str) -> str | None:
    return None if len(text.split()) >= 3 else "empty or too short to say anything"


SummaryCheck = Callable[[CheckContext, str], str | None]
CHECKS: tuple[tuple[str, SummaryCheck], ...] = (
    ("summary.not_empty", not_empty),
    ("summary.names_entity", names_an_entity),
    ("summary.no_contradiction", no_contradiction),
    ("summary.no_instruction", no_instruction_text),
    ("summary.not_vague", not_vague),
    ("summary.no_foreign_names", no_foreign_names),
    ("summary.no_placeholder", no_placeholder),
    ("summary.no_foreign_values", no_foreign_values),
    ("summary.no_verbatim_copy", no_verbatim_copy),
)
