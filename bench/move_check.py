"""Did the layout move of issue 12 change the headline figures? The same harnesses run on
the tree just before the move and just after it, interleaved, side by side in one run.

The move (commits af027f4 and db517f8: `pipeline/` in layers — analysis/, kafka/,
sources/, cli/) changed import paths, not code. To check that it changed nothing
measurable, each tree runs *its own copy of the same harness* (the copy after the move
differs only in import paths), from a git worktree of that commit, with this checkout's
venv and the shared embedded stack:

- router overhead: `bench/router_overhead.py --routers ours` of that time (open loop
  against the simulator; overhead = the router's total − its replica call, p50/p99; CPU
  per request of the process) — the harness the headline used before the move;
- pipeline throughput: `bench/pipeline_throughput.py --verdicts 0` of that time (distinct
  alerts through normalize → embed → retrieve on the real broker and PostgreSQL, beside
  the embedding model's own rate on the same texts, in the same run).

Rounds alternate before, after, before, after…, so a change of the machine's load hits
both trees alike; the load average is printed beside every run. "Within noise" is judged
against the spread between rounds of the *same* tree: the move's effect is
after/before of the medians, the noise is the largest same-tree ratio seen.

Run: `.venv/bin/python -m bench.move_check [--rounds 3] [--record]` (needs
`secanalyst dev up`; makes worktrees under /tmp/secanalyst-move-check).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEFORE, AFTER = "a0b7a7d", "db517f8"
WORKTREES = Path("/tmp/secanalyst-move-check")
ROUTER_FIGURES = re.compile(
    r"overhead p50 (?P<p50>[\d.]+) ms, p99 (?P<p99>[\d.]+) ms over (?P<n>\d+) requests"
    r" \((?P<errors>\d+) errors\); achieved (?P<rate>\d+) req/s.*?CPU per request: "
    r"(?P<cpu>[\d.]+) ms here")
PIPELINE_FIGURES = re.compile(
    r"model alone, same texts : +(?P<model>[\d.]+) texts/s\s+pipeline \(Kafka in → "
    r"enriched out\): +(?P<pipeline>[\d.]+) alerts/s")


@dataclass
class Runs:
    """Figures of one measure per tree, one entry per round."""

    figures: dict[str, list[dict[str, float]]] = field(
        default_factory=lambda: {BEFORE: [], AFTER: []})
    loads: dict[str, list[str]] = field(default_factory=lambda: {BEFORE: [], AFTER: []})


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def worktree(commit: str) -> Path:
    path = WORKTREES / commit
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach",
                        str(path), commit], check=True, capture_output=True)
    return path


def run_harness(commit: str, module: str, args: list[str], pattern: re.Pattern[str],
                ) -> tuple[dict[str, float], str]:
    """One run of `module` in the worktree of `commit`; its figures and the load."""
    before = load_average()
    done = subprocess.run([sys.executable, "-m", module, *args], cwd=worktree(commit),
                          capture_output=True, text=True, timeout=900)
    after = load_average()
    match = pattern.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise SystemExit(f"{module} at {commit} failed (exit {done.returncode}):\n"
                         f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return {k: float(v) for k, v in match.groupdict().items()}, f"{before} → {after}"


def median(runs: Runs, commit: str, key: str) -> float:
    return statistics.median(r[key] for r in runs.figures[commit])


def same_tree_spread(runs: Runs, key: str) -> float:
    """The largest max/min ratio of one tree's rounds: what the noise alone does."""
    spreads = [max(r[key] for r in rounds) / min(r[key] for r in rounds)
               for rounds in runs.figures.values() if min(r[key] for r in rounds) > 0]
    return max(spreads, default=1.0)


def verdict(runs: Runs, key: str, lower_is_better: bool) -> tuple[float, float, str]:
    ratio = median(runs, AFTER, key) / median(runs, BEFORE, key)
    noise = same_tree_spread(runs, key)
    within = 1 / noise <= ratio <= noise
    better = ratio < 1 if lower_is_better else ratio > 1
    said = "within noise" if within else ("better (outside noise)" if better
                                          else "WORSE (outside noise)")
    return ratio, noise, said


def table(title: str, runs: Runs, keys: list[tuple[str, str, bool]]) -> list[str]:
    lines = [f"**{title}**", "",
             "| tree | round | " + " | ".join(label for _, label, _ in keys)
             + " | load 1/5/15-min before → after |",
             "| --- | ---: | " + " | ".join("---:" for _ in keys) + " | --- |"]
    for commit in (BEFORE, AFTER):
        for i, (figures, load) in enumerate(zip(runs.figures[commit], runs.loads[commit],
                                                strict=True)):
            cells = " | ".join(f"{figures[k]:,.3f}" for k, _, _ in keys)
            lines.append(f"| {commit} | {i + 1} | {cells} | {load} |")
    lines += ["", "| figure | median before | median after | after / before | "
              "same-tree spread (noise) | judged |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for key, label, lower in keys:
        ratio, noise, said = verdict(runs, key, lower)
        lines.append(f"| {label} | {median(runs, BEFORE, key):,.3f} | "
                     f"{median(runs, AFTER, key):,.3f} | {ratio:.3f} | ×{noise:.3f} | {said} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--router-rate", type=int, default=200)
    parser.add_argument("--router-seconds", type=int, default=8)
    parser.add_argument("--alerts", type=int, default=200)
    parser.add_argument("--record", action="store_true",
                        help="append the section to docs/benchmarks.md and record the ratios")
    args = parser.parse_args()
    router_args = ["--rate", str(args.router_rate), "--seconds", str(args.router_seconds),
                   "--routers", "ours", "--no-record"]
    pipeline_args = ["--alerts", str(args.alerts), "--verdicts", "0"]
    router, pipeline = Runs(), Runs()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for round_no in range(args.rounds):
        for commit in (BEFORE, AFTER) if round_no % 2 == 0 else (AFTER, BEFORE):
            for runs, module, margs, pattern in (
                    (router, "bench.router_overhead", router_args, ROUTER_FIGURES),
                    (pipeline, "bench.pipeline_throughput", pipeline_args, PIPELINE_FIGURES)):
                figures, load = run_harness(commit, module, margs, pattern)
                if runs is pipeline:
                    figures["fraction"] = figures["pipeline"] / figures["model"]
                runs.figures[commit].append(figures)
                runs.loads[commit].append(load)
                print(f"round {round_no + 1} {commit} {module}: {figures} (load {load})",
                      flush=True)
    lines = ["## The layout move, before and after (issue 12) — `bench/move_check.py`", "",
             f"Run: `.venv/bin/python -m bench.move_check --rounds {args.rounds} --record`",
             "", f"{started} — {os.uname().machine}, {os.cpu_count()} cores. Before = "
             f"{BEFORE} (the commit before the move), after = {AFTER} (the move: "
             "af027f4 + db517f8); each tree runs its own copy of the harness of that time "
             "from a git worktree, rounds interleaved (before/after, then after/before). "
             f"Router: open loop at {args.router_rate} req/s for {args.router_seconds} s, "
             f"overhead = total − replica call inside the router's process. Pipeline: "
             f"{args.alerts} distinct alerts, normalize → embed → retrieve, ratio to the "
             "model's own rate in the same run.", ""]
    lines += table("Router overhead (bench/router_overhead.py --routers ours)", router,
                   [("p50", "overhead p50 ms", True), ("p99", "overhead p99 ms", True),
                    ("cpu", "CPU ms/request", True), ("rate", "achieved req/s", False)])
    lines += table("Pipeline throughput (bench/pipeline_throughput.py --verdicts 0)",
                   pipeline, [("pipeline", "pipeline alerts/s", False),
                              ("model", "model texts/s", False),
                              ("fraction", "fraction of the model's rate", False)])
    text = "\n".join(lines)
    print(text)
    if args.record:
        from bench.record import record

        command = f".venv/bin/python -m bench.move_check --rounds {args.rounds} --record"
        for key, runs, figure, lower in (("tidy.move_router_p99_after_over_before", router,
                                          "p99", True),
                                         ("tidy.move_pipeline_rate_after_over_before",
                                          pipeline, "pipeline", False)):
            ratio, noise, said = verdict(runs, figure, lower)
            record(key, round(ratio, 3), command=command,
                   goal=f"within noise of 1.0 (same-tree spread ×{noise:.2f}): {said}")
        with open(ROOT / "docs" / "benchmarks.md", "a") as doc:
            doc.write("\n" + text + "\n")


if __name__ == "__main__":
    main()
