"""What the verdict page renders beyond plain fields: ATT&CK links, the original alert as
pretty JSON, runbooks as HTML. Alert and runbook text is never trusted as markup."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt
from markupsafe import Markup

from pipeline.analysis.runbooks import DEFAULT_FOLDER, RunbookFormatError, parse_runbook

_TECHNIQUE = re.compile(r"^T(\d{4})(?:\.(\d{3}))?$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


def attack_url(technique_id: str) -> str | None:
    """T1110 → https://attack.mitre.org/techniques/T1110/, T1110.001 → .../T1110/001/."""
    found = _TECHNIQUE.match(technique_id.strip().upper())
    if found is None:
        return None
    sub = f"{found.group(2)}/" if found.group(2) else ""
    return f"https://attack.mitre.org/techniques/T{found.group(1)}/{sub}"


def pretty_original(raw: str | None) -> str | None:
    """The stored original alert (ASCII-escaped JSON text), indented for reading; shown
    as-is if it is not JSON. Jinja escapes the result like any other text."""
    if raw is None:
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return raw
    text = json.dumps(parsed, indent=2, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: keep the escapes
        text = json.dumps(parsed, indent=2, ensure_ascii=True)
    return text


def heading_anchor(heading: str) -> str:
    """The anchor of a `## Heading`, as pipeline/analysis/runbooks.py names chunks (slug#anchor)."""
    return heading.lower().replace(" ", "-")


def runbook_link(chunk_id: str) -> str | None:
    slug, _, anchor = chunk_id.partition("#")
    if not _SLUG.match(slug):
        return None
    return f"/runbooks/{slug}" + (f"#{anchor}" if anchor else "")


# "commonmark" with raw HTML off: a tag in a runbook is shown as text; markdown-it's
# validateLink already refuses javascript:, vbscript:, file: and most data: links.
_MARKDOWN = MarkdownIt("commonmark", {"html": False}).enable("table")


@lru_cache(maxsize=64)
def _render(path: Path, mtime: float) -> tuple[str, Markup]:
    runbook = parse_runbook(path)
    tokens = _MARKDOWN.parse(runbook.body)
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and i + 1 < len(tokens):
            token.attrSet("id", heading_anchor(tokens[i + 1].content))
    return runbook.title, Markup(_MARKDOWN.renderer.render(tokens, _MARKDOWN.options, {}))


def render_runbook(slug: str, folder: Path = DEFAULT_FOLDER) -> tuple[str, Markup] | None:
    """(title, HTML) of runbooks/<slug>.md; None for an unknown or malformed name."""
    if not _SLUG.match(slug):
        return None
    path = folder / f"{slug}.md"
    if not path.is_file():
        return None
    try:
        return _render(path, path.stat().st_mtime)
    except RunbookFormatError:
        return None


def entity_links(facts: dict[str, Any] | None, agent: str | None) -> dict[str, str]:
    """Queue filters this verdict can pivot to: {filter name: value}."""
    facts = facts or {}
    links = {"src_ip": facts.get("src_ip"), "dst_ip": facts.get("dst_ip"),
             "user": facts.get("user"), "host": facts.get("agent"),
             "agent": None if facts.get("agent") else agent}
    return {k: str(v) for k, v in links.items() if v}
