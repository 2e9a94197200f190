"""Headings, anchors and sections of docs/benchmarks.md, shared by the headline table
(`bench/headline.py`) and the archiving of superseded runs (`bench/archive.py`).

Anchors follow GitHub's rule (lower-case; keep letters, digits, `_`, `-` and spaces; spaces
become `-`; the n-th repeat of an anchor gets `-n`), so links work where the file is read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

HEADING = re.compile(r"^(#{1,6}) +(.+?) *#*$")
# The bench script (or other command) a section measures, as its heading names it.
SOURCE_IN_HEADING = re.compile(r"`(bench/\w+\.py|make \w+|tests/[\w/]+\.py)")
SOURCE_IN_COMMAND = re.compile(r"\bbench[./](\w+)")


def slug(text: str) -> str:
    kept = "".join(c for c in text.lower() if c.isalnum() or c in "_- ")
    return kept.replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str, str]]:
    """(level, text, anchor) of every heading outside code fences, in order."""
    found: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.append((len(match.group(1)), match.group(2),
                          base if count == 0 else f"{base}-{count}"))
    return found


def source_of_heading(text: str) -> str | None:
    match = SOURCE_IN_HEADING.search(text)
    return match.group(1) if match else None


def source_of_command(command: str) -> str:
    """`python -m bench.storm …` → `bench/storm.py`; `make reliability` stays itself;
    `pytest tests/x.py …` → `tests/x.py`."""
    match = SOURCE_IN_COMMAND.search(command)
    if match:
        return f"bench/{match.group(1)}.py"
    words = command.split()
    if words[:1] == ["make"]:
        return " ".join(words[:2])
    paths = [w for w in words if w.startswith("tests/")]
    return paths[0] if paths else command


def latest_section_anchor(markdown: str, source: str) -> str | None:
    """The anchor of the last `##` section whose heading names `source`."""
    anchors = [anchor for level, text, anchor in headings(markdown)
               if level == 2 and source_of_heading(text) == source]
    return anchors[-1] if anchors else None


@dataclass
class Section:
    """One `## ` heading and everything up to the next one (its `###` included)."""

    text: str

    @property
    def title(self) -> str:
        return self.text.split("\n", 1)[0][3:].strip()

    @property
    def source(self) -> str | None:
        return source_of_heading(self.title)


def split_sections(markdown: str) -> tuple[str, list[Section]]:
    """The text before the first `## ` heading, and each `## ` section after it (outside
    code fences). Joining them back gives the input unchanged."""
    head: list[str] = []
    sections: list[list[str]] = []
    fenced = False
    for line in markdown.splitlines(keepends=True):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
        else:
            head.append(line)
    return "".join(head), [Section("".join(lines)) for lines in sections]
