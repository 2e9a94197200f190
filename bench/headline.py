"""The headline table at the top of `docs/benchmarks.md`, generated from
`docs/benchmarks.json` (every bench script records its headline figures there with
`bench.record.record`). Run: `python -m bench.headline` (record() also runs it).

The table sits between two markers; everything else in the file is left as it is."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).parents[1]
BENCHMARKS_JSON = ROOT / "docs" / "benchmarks.json"
BENCHMARKS_MD = ROOT / "docs" / "benchmarks.md"
START, END = "<!-- headline:start -->", "<!-- headline:end -->"


def table(figures: dict[str, dict[str, object]]) -> str:
    lines = [START, "## Headline figures", "",
             "Generated from `docs/benchmarks.json` by `python -m bench.headline`; each row is "
             "the latest run of the command beside it. Details of each run are in the "
             "sections below; figures measured before this table existed are only there.", "",
             "| measure | value | goal | date | command |", "| --- | ---: | --- | --- | --- |"]
    for key, figure in sorted(figures.items()):
        value = figure["value"]
        shown = f"{value:,}" if isinstance(value, int) else f"{value:,.4g}"
        lines.append(f"| `{key}` | {shown} | {figure['goal']} | {figure['date']} | "
                     f"`{figure['command']}` |")
    lines.append(END)
    return "\n".join(lines)


def refresh(json_path: Path = BENCHMARKS_JSON, md_path: Path = BENCHMARKS_MD) -> None:
    figures = json.loads(json_path.read_text()) if json_path.exists() else {}
    text = md_path.read_text() if md_path.exists() else "# Benchmarks\n"
    block = table(figures)
    if START in text and END in text:
        before, rest = text.split(START, 1)
        text = before + block + rest.split(END, 1)[1]
    else:  # first time: after the title and its opening paragraph
        head, _, body = text.partition("\n## ")
        text = f"{head.rstrip()}\n\n{block}\n\n## {body}" if body else f"{text}\n{block}\n"
    md_path.write_text(text)


if __name__ == "__main__":
    refresh()
