"""Keep docs/benchmarks.md to the latest run of each measure; move the rest to
docs/benchmarks-archive.md.

A measure is the bench script (or `make …`, `tests/…py`) a `## ` heading names; each
section is that heading and everything up to the next `## ` (its `###` notes go with it).
Sections are appended in time order, so the last one of a measure is its latest run and
every earlier one is moved, unchanged, to the end of the archive. Sections that name no
script, and the text before the first one, stay where they are. The headline table is then
regenerated so that its links point at the sections that remain.

Run after appending a run to docs/benchmarks.md: `python -m bench.archive` (prints what it
moved). Re-reads both files right before writing them: other sessions append too.
"""

from __future__ import annotations

from pathlib import Path

from bench.headline import BENCHMARKS_JSON, BENCHMARKS_MD, refresh
from bench.md_sections import Section, split_sections

ARCHIVE_MD = BENCHMARKS_MD.with_name("benchmarks-archive.md")
ARCHIVE_INTRO = """# Benchmarks: earlier runs

Runs superseded by a later run of the same measure, moved here unchanged from
[benchmarks.md](benchmarks.md) (by `python -m bench.archive`), oldest first. Sections
here still say "above" and "below" as they did there; today's figures are in
[benchmarks.md](benchmarks.md#headline-figures).
"""


def superseded(sections: list[Section]) -> tuple[list[Section], list[Section]]:
    """(kept, moved): the last section of each measure and the unmeasured ones are kept,
    in their order; every earlier section of a measure is moved, in its order."""
    last = {section.source: index for index, section in enumerate(sections) if section.source}
    kept: list[Section] = []
    moved: list[Section] = []
    for index, section in enumerate(sections):
        is_old = section.source is not None and last[section.source] != index
        (moved if is_old else kept).append(section)
    return kept, moved


def with_blank_line(text: str) -> str:
    return text if text.endswith("\n\n") else text.rstrip("\n") + "\n\n"


def archive(md_path: Path = BENCHMARKS_MD, archive_path: Path = ARCHIVE_MD,
            json_path: Path = BENCHMARKS_JSON) -> list[str]:
    """Move superseded sections; return their titles."""
    head, sections = split_sections(md_path.read_text())
    kept, moved = superseded(sections)
    if moved:
        old = archive_path.read_text() if archive_path.exists() else ARCHIVE_INTRO
        archive_path.write_text(with_blank_line(old)
                                + "".join(with_blank_line(s.text) for s in moved).rstrip("\n")
                                + "\n")
        md_path.write_text((head + "".join(s.text for s in kept)).rstrip("\n") + "\n")
    refresh(json_path, md_path)
    return [section.title for section in moved]


if __name__ == "__main__":
    for title in archive():
        print(f"archived: {title}")
