"""The headline table of docs/benchmarks.md is generated from benchmarks.json, in place."""

from __future__ import annotations

from pathlib import Path

from bench.headline import END, START, refresh
from bench.record import record


def test_record_then_refresh_puts_every_figure_in_one_table(tmp_path: Path) -> None:
    figures, md = tmp_path / "benchmarks.json", tmp_path / "benchmarks.md"
    md.write_text("# Benchmarks\n\nIntro.\n\n## Old section\n\nbody\n")
    record("a.latency_p95_ms", 12.5, goal="< 20", command="python -m bench.a", path=figures)
    record("b.lost", 0, goal="0", command="make reliability", path=figures)
    refresh(figures, md)
    text = md.read_text()
    assert text.index("Intro.") < text.index(START) < text.index("## Old section")
    table = text[text.index(START):text.index(END)]
    assert "| `a.latency_p95_ms` | 12.5 | < 20 |" in table
    assert "| `b.lost` | 0 | 0 |" in table

    record("a.latency_p95_ms", 9.0, goal="< 20", command="python -m bench.a", path=figures)
    refresh(figures, md)
    text = md.read_text()
    assert text.count(START) == 1 and "| 9 |" in text and "| 12.5 |" not in text
    assert text.endswith("## Old section\n\nbody\n")
