"""Runbooks: markdown with YAML front matter, chunked on `## ` headings, embedded into
pgvector. Loading is incremental: unchanged chunks (same text hash) are not re-embedded.

Front matter: `title`, `wazuh_rules`, `wazuh_groups` (which alerts the runbook is written
for), `attack` — a list of scopes `{ids: [...], rules: [...], groups: [...], decoders:
[...]}`, so an id is attached only to the alerts it is about (a flat list of ids is
accepted but scopes nothing) — and `examples`: the example values its investigation
commands use (`src_ip: 203.0.113.45`, `agent: web-01.example.com`, ...), which each
verdict replaces with its own alert's values."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

# Groups shared by unrelated rules say nothing about which runbook applies.
GENERIC_GROUPS = frozenset({"syslog", "windows", "ossec", "local", "json", "web", "attack",
                            "accesslog", "audit", "amazon", "pci_dss"})
DEFAULT_FOLDER = Path(__file__).parents[2] / "runbooks"
_DOC_VALUE = re.compile(r"\b(?:192\.0\.2|198\.51\.100|203\.0\.113)\.\d{1,3}\b"
                        r"|\b[\w-]+\.example\.com\b")


@dataclass(frozen=True)
class AttackScope:
    ids: tuple[str, ...]
    rules: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    decoders: frozenset[str] = frozenset()

    def applies_to(self, rule_id: str, groups: Iterable[str], decoder: str | None) -> str | None:
        """Why this scope covers the alert ("rule 5712", "group invalid_login"), or None."""
        if rule_id in self.rules:
            return f"rule {rule_id}"
        shared = sorted((set(groups) - GENERIC_GROUPS) & self.groups)
        if shared:
            return f"group {shared[0]}"
        if decoder and decoder in self.decoders:
            return f"decoder {decoder}"
        return None


@dataclass(frozen=True)
class Runbook:
    slug: str
    title: str
    attack_ids: list[str]
    wazuh_groups: list[str]
    wazuh_rules: list[str]
    body: str
    attack_scope: tuple[AttackScope, ...] = ()
    examples: dict[str, str] = field(default_factory=dict)

    def matches(self, rule_id: str, groups: Iterable[str]) -> str | None:
        """Why the runbook is written for this alert's rule or groups, or None."""
        if rule_id in self.wazuh_rules:
            return f"rule {rule_id}"
        shared = sorted((set(groups) - GENERIC_GROUPS) & set(self.wazuh_groups))
        return f"group {shared[0]}" if shared else None

    @property
    def investigation_chunk_id(self) -> str:
        return f"{self.slug}#investigation-steps"

    def investigation_steps(self) -> list[str]:
        """The commands and queries of the "Investigation steps" section, one per step."""
        steps: list[str] = []
        in_section = in_code = False
        language = ""
        for line in self.body.splitlines():
            if line.startswith("## "):
                in_section = line[3:].strip().lower().startswith("investigation")
                continue
            if not in_section:
                continue
            if line.strip().startswith("```"):
                in_code, language = not in_code, line.strip()[3:].strip()
                continue
            text = line.strip()
            if in_code and text and not text.startswith("#") and language in ("", "sh",
                                                                            "bash"):
                steps.append(text)
        return steps

    def filled_steps(self, values: dict[str, str | None]) -> list[str | None]:
        """Each step with this runbook's example values replaced by the alert's; None for
        a step that needs a value the alert does not have (it would point elsewhere)."""
        return [fill_step(step, self.examples, values) for step in self.investigation_steps()]


def fill_step(step: str, examples: dict[str, str], values: dict[str, str | None]) -> str | None:
    covered = set(examples.values())
    if any(doc not in covered for doc in _DOC_VALUE.findall(step)):
        return None  # an example value the front matter does not map: cannot fill it in
    for key, example in sorted(examples.items(), key=lambda kv: -len(kv[1])):
        if example in step:
            # "container_2" is a second example of "container"
            value = values.get(key) or values.get(key.rstrip("_0123456789"))
            if not value:
                return None
            step = step.replace(example, value)
    return step


@dataclass(frozen=True)
class Chunk:
    chunk_id: str
    runbook: Runbook
    heading: str
    content: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content.encode()).hexdigest()

    def embedding_text(self) -> str:
        return f"{self.runbook.title} — {self.heading}\n{self.content}"


class RunbookFormatError(ValueError):
    pass


def parse_runbook(path: Path) -> Runbook:
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise RunbookFormatError(f"{path}: must start with '---' front matter")
    try:
        header, body = text[4:].split("\n---\n", 1)
    except ValueError:
        raise RunbookFormatError(f"{path}: front matter is not closed with '---'") from None
    meta = yaml.safe_load(header) or {}
    if not meta.get("title"):
        raise RunbookFormatError(f"{path}: front matter needs a title")
    scopes = _scopes(path, meta.get("attack") or [])
    flat = [str(t) for t in meta.get("attack") or [] if not isinstance(t, dict)]
    examples = meta.get("examples") or {}
    if not isinstance(examples, dict):
        raise RunbookFormatError(f"{path}: examples must map entity names to values")
    return Runbook(slug=path.stem, title=str(meta["title"]),
                   attack_ids=list(dict.fromkeys(flat + [t for s in scopes for t in s.ids])),
                   wazuh_groups=[str(g) for g in meta.get("wazuh_groups", [])],
                   wazuh_rules=[str(r) for r in meta.get("wazuh_rules", [])], body=body,
                   attack_scope=tuple(scopes),
                   examples={str(k): str(v) for k, v in examples.items()})


def _scopes(path: Path, entries: list[object]) -> list[AttackScope]:
    scopes = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        if not entry.get("ids") or not (entry.get("rules") or entry.get("groups")
                                        or entry.get("decoders")):
            raise RunbookFormatError(f"{path}: each attack scope needs ids and rules, "
                                     "groups or decoders")
        scopes.append(AttackScope(
            ids=tuple(str(t) for t in entry["ids"]),
            rules=frozenset(str(r) for r in entry.get("rules") or []),
            groups=frozenset(str(g) for g in entry.get("groups") or []),
            decoders=frozenset(str(d) for d in entry.get("decoders") or [])))
    return scopes


def chunk_runbook(runbook: Runbook) -> list[Chunk]:
    chunks: list[Chunk] = []
    heading, lines = "Overview", list[str]()
    for line in [*runbook.body.splitlines(), "## "]:
        if line.startswith("## "):
            content = "\n".join(lines).strip()
            if content:
                slug = heading.lower().replace(" ", "-")
                chunks.append(Chunk(f"{runbook.slug}#{slug}", runbook, heading, content))
            heading, lines = line[3:].strip(), []
        elif not line.startswith("# "):
            lines.append(line)
    return chunks


def load_chunks(folder: Path) -> list[Chunk]:
    paths = sorted(folder.glob("*.md"))
    if not paths:
        raise RunbookFormatError(f"no runbooks (*.md) in {folder}")
    return [c for p in paths for c in chunk_runbook(parse_runbook(p))]


@lru_cache(maxsize=4)
def library(folder: Path = DEFAULT_FOLDER) -> tuple[Runbook, ...]:
    """The runbooks on disk (parsed once per process)."""
    return tuple(parse_runbook(p) for p in sorted(folder.glob("*.md")))


def matching(runbooks: Iterable[Runbook], rule_id: str,
             groups: Iterable[str]) -> list[tuple[Runbook, str]]:
    """Runbooks written for this alert, those naming its rule first."""
    groups = list(groups)
    found = [(r, why) for r in runbooks if (why := r.matches(rule_id, groups))]
    return sorted(found, key=lambda pair: not pair[1].startswith("rule"))
