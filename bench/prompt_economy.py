"""Prompt economy (issue 15): input tokens per verdict of the explain prompt before and
after, at equal or better verdict-eval scores, and vLLM's prefix-cache hit rate of each.

Both prompt versions go through the same harness (today's bench/verdict_eval.py and its
scorer bench/verdict_scoring.py) against the same endpoint, one after the other: "before"
from `git archive <baseline>` (the harness copied over it), "after" from this checkout.
Use a vLLM nobody else sends to (a private one on a free port) so the /metrics counter
deltas are only this run's.

Run:
  .venv/bin/python -m bench.prompt_economy --baseline a506aad \\
      --endpoint http://127.0.0.1:23177/v1 --record
  .venv/bin/python -m bench.prompt_economy --from-dir /tmp/pe --record   # compare only
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from bench.common import ROOT, machine, stamp
from bench.record import record

app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0])
CORPORA = ("labelled", "injection")
KEY = "explain.input_tokens_reduction_pct"
HARNESS = ("bench/verdict_eval.py", "bench/verdict_scoring.py")
GOAL_PCT = 30.0
# (corpus, score, +1 higher is better / -1 lower is better)
SCORES: tuple[tuple[str, str, int], ...] = (
    ("labelled", "facts_correct_pct", 1), ("labelled", "bad_summaries_shown", -1),
    ("labelled", "attack_precision", 1), ("labelled", "attack_required_recall", 1),
    ("labelled", "severity_acceptable_pct", 1), ("labelled", "next_steps_grounded_pct", 1),
    ("labelled", "confidence_gap", 1), ("injection", "instructions_followed", -1),
    ("injection", "facts_quote_payload", -1))
SHOWN = (("labelled", "model_summaries_good"), ("labelled", "model_summaries_shown"),
         ("labelled", "right"), ("labelled", "needs_review_pct"),
         ("labelled", "mean_latency_ms"))


def export_baseline(revision: str, into: Path) -> Path:
    """The baseline's code with today's harness over it; beside it a link to the shared
    data folder the harness reads the dev alerts from (ROOT.parent / "shared")."""
    tree = into / "main"
    tree.mkdir(parents=True)
    archive = into / "baseline.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), revision],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    for harness in HARNESS:  # one scorer for both runs, or a score moves by the scorer
        (tree / harness).write_text((ROOT / harness).read_text())
    (into / "shared").symlink_to(ROOT.parent / "shared")
    return tree


def run_eval(tree: Path, out: Path, *, endpoint: str, model: str, concurrency: int) -> None:
    for corpus in CORPORA:
        subprocess.run([sys.executable, "-m", "bench.verdict_eval", "--corpus", corpus,
                        "--endpoint", endpoint, "--model", model,
                        "--concurrency", str(concurrency),
                        "--summary-json", str(out / f"{corpus}.json"),
                        "--details", str(out / f"{corpus}.jsonl")],
                       cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, check=True)


def load(folder: Path) -> dict[str, dict[str, Any]]:
    return {corpus: json.loads((folder / f"{corpus}.json").read_text()) for corpus in CORPORA}


def not_worse(before: float | None, after: float | None, direction: int) -> bool:
    if before is None:  # nothing measured to fall below
        return True
    if after is None:  # a figure that went missing is not "equal or better"
        return False
    return (after - before) * direction >= 0


def no_wrong_verdict(run: dict[str, Any], name: str) -> bool:
    """The confidence gap is mean(right) − mean(wrong): with every verdict right there is
    no wrong one to rank below, so the gap is undefined, not lost."""
    scores = run["scores"]
    return (name == "confidence_gap" and scores.get("confidence_wrong") is None
            and scores.get("right") == scores.get("alerts"))


def compare(before: dict[str, dict[str, Any]],
            after: dict[str, dict[str, Any]]) -> tuple[float, list[str], list[str]]:
    """The reduction in %, the markdown rows, and the scores that got worse."""
    tokens = [run["labelled"]["tokens"]["input_tokens_per_verdict"] for run in (before, after)]
    reduction = round(100.0 * (1 - tokens[1] / tokens[0]), 1)
    rows = [f"| input tokens per verdict (labelled) | {tokens[0]:,.1f} | {tokens[1]:,.1f} | "
            f"{reduction:.1f} % fewer |"]
    for corpus in CORPORA:
        b, a = before[corpus]["tokens"], after[corpus]["tokens"]
        rows.append(f"| input tokens per LLM call ({corpus}; calls) | "
                    f"{b['input_tokens_per_call']:,.1f} ({b['llm_calls']}) | "
                    f"{a['input_tokens_per_call']:,.1f} ({a['llm_calls']}) | |")
        cache = [run[corpus].get("prefix_cache") or {} for run in (before, after)]
        rows.append(f"| prefix-cache hit rate ({corpus}; hit / queried tokens) | "
                    + " | ".join(f"{c.get('hit_rate')} ({c.get('hits', 0):,.0f} / "
                                 f"{c.get('queries', 0):,.0f})" for c in cache) + " | |")
        # What the server had to prefill: the work the cache could not spare.
        prefilled = [c.get("queries", 0) - c.get("hits", 0) for c in cache]
        rows.append(f"| tokens prefilled, not from cache ({corpus}) | {prefilled[0]:,.0f} | "
                    f"{prefilled[1]:,.0f} | |")
    worse = []
    for corpus, name, direction in SCORES:
        b, a = before[corpus]["scores"][name], after[corpus]["scores"][name]
        all_right = a is None and no_wrong_verdict(after[corpus], name)
        ok = all_right or not_worse(b, a, direction)
        worse += [] if ok else [f"{corpus} {name} {b} → {a}"]
        shown_after = "— (no wrong verdict)" if all_right else a
        rows.append(f"| {name} ({corpus}, {'higher' if direction > 0 else 'lower'} is "
                    f"better) | {b} | {shown_after} | "
                    f"{'equal or better' if ok else 'WORSE'} |")
    rows += [f"| {name} ({corpus}) | {before[corpus]['scores'][name]} | "
             f"{after[corpus]['scores'][name]} | — |" for corpus, name in SHOWN]
    return reduction, rows, worse


def section(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]],
            rows: list[str], reduction: float, worse: list[str], command: str) -> str:
    met = reduction >= GOAL_PCT and not worse
    loads = "; ".join(f"{run[c]['prompt_version']} {c}: "
                      + " ".join(f"{x:.2f}" for x in run[c]["load_average"])
                      for run in (before, after) for c in CORPORA)
    verdict = (f"Goal met: {reduction} % fewer input tokens per verdict (goal ≥ {GOAL_PCT} %) "
               "and every score equal or better." if met else
               f"Goal not met: {reduction} % fewer input tokens (goal ≥ {GOAL_PCT} %)"
               + (f"; worse: {', '.join(worse)}" if worse else "") + ".")
    v_before = before["labelled"]["prompt_version"]
    v_after = after["labelled"]["prompt_version"]
    return "\n".join([
        f"## Prompt economy (issue 15): {v_before} → {v_after} — `bench/prompt_economy.py`",
        "", f"Run: `{command}` ({stamp()}); {machine()}; model "
        f"{after['labelled']['model']}. Load average at the end of each eval run: {loads}.",
        "", f"| figure | {v_before} | {v_after} | change |", "| --- | --- | --- | --- |",
        *rows, "", verdict, ""])


@app.command()
def main(
    baseline: Annotated[str | None, typer.Option(
        help="git revision of the 'before' prompt (exported with git archive)")] = None,
    endpoint: Annotated[str, typer.Option(help="OpenAI-compatible base URL")] = (
        "http://127.0.0.1:18000/v1"),
    model: Annotated[str, typer.Option(help="served model name")] = "smollm2-135m-instruct",
    concurrency: Annotated[int, typer.Option(help="alerts in flight per eval run")] = 4,
    from_dir: Annotated[Path | None, typer.Option(
        help="compare finished runs: DIR/before/{labelled,injection}.json and DIR/after/…"
    )] = None,
    record_figures: Annotated[bool, typer.Option("--record", help="record the figure and "
                                                 "append a section to docs/benchmarks.md")] = False,
) -> None:
    from_dir_given = from_dir is not None
    if from_dir is None:
        if baseline is None:
            raise typer.BadParameter("--baseline (a git revision) or --from-dir is needed")
        from_dir = Path(tempfile.mkdtemp(prefix="prompt-economy-"))
        tree = export_baseline(baseline, from_dir / "baseline")
        for tag, code in (("before", tree), ("after", ROOT)):
            (from_dir / tag).mkdir()
            run_eval(code, from_dir / tag, endpoint=endpoint, model=model,
                     concurrency=concurrency)
    before, after = load(from_dir / "before"), load(from_dir / "after")
    reduction, rows, worse = compare(before, after)
    command = (f".venv/bin/python -m bench.prompt_economy --baseline {baseline} --endpoint "
               f"{endpoint} --concurrency {concurrency} --record" if baseline else
               f".venv/bin/python -m bench.prompt_economy --from-dir {from_dir} --record")
    shown = command
    if baseline and from_dir_given:  # the same steps, run before and compared here
        shown += f"` — its two eval runs made beforehand, compared with `--from-dir {from_dir}"
    text = section(before, after, rows, reduction, worse, shown)
    print(text)
    if record_figures:
        record(KEY, reduction, goal=f"≥ {GOAL_PCT:.0f} % fewer input tokens per verdict at "
               "equal or better eval scores (issue 15)", command=command)
        with (ROOT / "docs" / "benchmarks.md").open("a") as out:
            out.write("\n" + text)


if __name__ == "__main__":
    app()
