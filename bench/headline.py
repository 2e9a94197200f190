"""The headline table at the top of `docs/benchmarks.md`, generated from
`docs/benchmarks.json` (every bench script records its headline figures there with
`bench.record.record`). Run: `python -m bench.headline` (record() also runs it).

The table sits between two markers; everything else in the file is left as it is. Each
measure links to the latest `##` section whose heading names the script its command runs
(`bench/x.py`, `make reliability`, `tests/…py`); a figure with no such section yet is shown
unlinked (tests/unit/test_benchmarks_doc.py fails on it for the real file)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.md_sections import latest_section_anchor, source_of_command

ROOT = Path(__file__).parents[1]
BENCHMARKS_JSON = ROOT / "docs" / "benchmarks.json"
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- headline:start -->", "<!-- headline:end -->"


def measure_cell(key: str, command: str, markdown: str) -> str:
    anchor = latest_section_anchor(markdown, source_of_command(command))
    return f"[`{key}`](#{anchor})" if anchor else f"`{key}`"


def table(figures: dict[str, dict[str, object]], markdown: str = "") -> str:
    lines = [START, "## Headline figures", "",
             "Generated from `docs/benchmarks.json` by `python -m bench.headline`; each row is "
             "the latest run of the command beside it; the measure links to its section below. "
             "Only the latest run of each measure is in this file: earlier runs are in "
             "[benchmarks-archive.md](benchmarks-archive.md).", "",
             "| measure | value | goal | date | command |", "| --- | ---: | --- | --- | --- |"]
    for key, figure in sorted(figures.items()):
        value = figure["value"]
        shown = f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"
        cell = measure_cell(key, str(figure["command"]), markdown)
        lines.append(f"| {cell} | {shown} | {figure['goal']} | {figure['date']} | "
                     f"`{figure['command']}` |")
    lines.append(END)
    return "\n".join(lines)


def refresh(json_path: Path = BENCHMARKS_JSON, md_path: Path = BENCHMARKS_MD) -> None:
    figures = json.loads(json_path.read_text()) if json_path.exists() else {}
    text = md_path.read_text() if md_path.exists() else "# Benchmarks\n"
    block = table(figures, text)
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + block + rest.split(END, 1)[1]
    else:  # first time: after the title and its opening paragraph
        head, _, body = text.partition("\n## ")
        text = f"{head.rstrip()}\n\n{block}\n\n## {body}" if body else f"{text}\n{block}\n"
    md_path.write_text(text)


if __name__ == "__main__":
    refresh()
