"""Headline figures of the benchmarks, merged into `docs/benchmarks.json`.

One object keyed by figure name (the keys the issues name), each
`{"value": <number>, "goal": "<text>", "date": "YYYY-MM-DD", "command": "<how to rerun>"}`.
Every bench script calls `record(...)` for its headline figures; details go to
`docs/benchmarks.md`. Writes are read-merge-replace, so scripts run one after another
(or side by side) keep each other's keys.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

BENCHMARKS_JSON = Path(__file__).parents[1] / "docs" / "benchmarks.json"


def record(key: str, value: float | int, *, goal: str, command: str,
           path: Path = BENCHMARKS_JSON) -> None:
    """Set one headline figure (replacing an older value of the same key)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{key}: value must be a number, got {value!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_suffix(".lock")
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # two bench scripts may finish together
        figures = json.loads(path.read_text()) if path.exists() else {}
        figures[key] = {"value": value, "goal": goal,
                        "date": datetime.now(UTC).strftime("%Y-%m-%d"), "command": command}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as out:
            json.dump(dict(sorted(figures.items())), out, indent=2)
            out.write("\n")
        os.replace(tmp, path)
    if path == BENCHMARKS_JSON:  # keep the headline table of docs/benchmarks.md current
        from bench.headline import refresh

        refresh()
