"""docs/benchmarks.md: its headline table covers every figure of docs/benchmarks.json and
links each to a section that exists; archiving superseded runs loses nothing."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bench.archive import archive
from bench.headline import BENCHMARKS_JSON, BENCHMARKS_MD, END, START
from bench.md_sections import headings, slug, source_of_command, split_sections
from bench.record import record

LINK = re.compile(r"\]\(#([^)]+)\)")


def headline_rows(markdown: str) -> list[str]:
    block = markdown[markdown.index(START):markdown.index(END)]
    return [line for line in block.splitlines() if line.startswith("| ")][2:]


def test_every_headline_link_resolves_and_every_figure_is_in_the_table() -> None:
    markdown = BENCHMARKS_MD.read_text()
    anchors = {anchor for _, _, anchor in headings(markdown)}
    rows = headline_rows(markdown)
    links = {row.split(" | ")[0]: LINK.search(row) for row in rows}
    unresolved = [cell for cell, link in links.items() if not link or link[1] not in anchors]
    assert not unresolved, f"headline rows without a section in benchmarks.md: {unresolved}"
    shown = set(re.findall(r"^\| \[?`([^`]+)`", "\n".join(rows), re.MULTILINE))
    missing = set(json.loads(BENCHMARKS_JSON.read_text())) - shown
    assert not missing, f"figures of benchmarks.json missing from the table: {missing}"


def test_every_section_of_benchmarks_md_is_a_different_measure() -> None:
    _, sections = split_sections(BENCHMARKS_MD.read_text())
    sources = [s.source for s in sections if s.source]
    repeated = {source for source in sources if sources.count(source) > 1}
    assert not repeated, f"superseded runs still in benchmarks.md (python -m bench.archive): " \
                         f"{repeated}"


def test_slug_and_sources_follow_github_and_the_commands() -> None:
    assert slug("Router overhead, open loop (issue #3) — `bench/router_overhead.py`") == \
        "router-overhead-open-loop-issue-3--benchrouter_overheadpy"
    assert [a for _, _, a in headings("## A\n```\n## not\n```\n## A\n### A\n")] == \
        ["a", "a-1", "a-2"]
    assert source_of_command(".venv/bin/python -m bench.storm --x") == "bench/storm.py"
    assert source_of_command("python bench/backfill.py") == "bench/backfill.py"
    assert source_of_command("make reliability") == "make reliability"
    assert source_of_command("pytest tests/e2e/test_x.py (FULL=1)") == "tests/e2e/test_x.py"


def test_archive_keeps_the_latest_run_of_each_measure_and_loses_no_line(tmp_path: Path) -> None:
    md, old, figures = (tmp_path / "benchmarks.md", tmp_path / "archive.md",
                        tmp_path / "benchmarks.json")
    runs = ["## Speed — `bench/speed.py`\n\nrun 1: 10/s\n\n### Why\n\nnoise\n\n",
            "## Size — `bench/size.py`\n\n3 MiB\n\n",
            "## Notes\n\nno script named\n\n",
            "## Speed — `bench/speed.py`\n\nrun 2: 12/s\n\n",
            "## Speed, warm — `bench/speed.py`\n\nrun 3: 14/s\n"]
    md.write_text("# Benchmarks\n\nIntro.\n\n" + "".join(runs))
    record("speed.per_s", 14, goal="> 10", command="python -m bench.speed", path=figures)
    record("size.mib", 3, goal="< 4", command="python -m bench.size", path=figures)

    moved = archive(md, old, figures)

    assert moved == ["Speed — `bench/speed.py`", "Speed — `bench/speed.py`"]
    text, archived = md.read_text(), old.read_text()
    assert "run 3" in text and "run 1" not in text and "run 2" not in text
    assert archived.index("run 1") < archived.index("noise") < archived.index("run 2")
    assert "3 MiB" in text and "no script named" in text
    before = "".join(runs).splitlines()
    after = text.splitlines() + archived.splitlines()
    assert all(after.count(line) >= before.count(line) for line in before if line)
    assert "[`speed.per_s`](#speed-warm--benchspeedpy)" in text
    assert "[`size.mib`](#size--benchsizepy)" in text
    assert archive(md, old, figures) == []  # nothing left to move
