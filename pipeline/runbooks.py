"""Runbooks: markdown with YAML front matter, chunked on `## ` headings, embedded into
pgvector. Loading is incremental: unchanged chunks (same text hash) are not re-embedded."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Runbook:
    slug: str
    title: str
    attack_ids: list[str]
    wazuh_groups: list[str]
    wazuh_rules: list[str]
    body: str


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
    return Runbook(slug=path.stem, title=str(meta["title"]),
                   attack_ids=[str(t) for t in meta.get("attack", [])],
                   wazuh_groups=[str(g) for g in meta.get("wazuh_groups", [])],
                   wazuh_rules=[str(r) for r in meta.get("wazuh_rules", [])], body=body)


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
