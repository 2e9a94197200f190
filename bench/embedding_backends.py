"""Embedding engines side by side (issue 15): texts/s, agreement with PyTorch, retrieval.

For each backend of `embedding.backend` (torch, onnx, onnx-int8, openvino, openvino-bf16),
in ONE run:
- texts/s on the texts the embed stage embeds (`alert_text(normalize(...))`) of the dev
  alerts (../shared/data/wazuh-alerts), the samples and the dashboard's sample templates,
  in interleaved rounds (torch, onnx, ... torch, onnx, ...) so that a change of the
  machine's load hits every backend alike; the speed-up is the median of the per-round
  ratios to torch;
- cosine of each text's vector to torch's (min / mean);
- top-5 runbook passages per alert, each backend against the passages it embedded itself
  (in memory, exact cosine), identical as a set to torch's (and in the same order).
The chosen backend is the fastest whose agreement meets the goals.

Run: .venv/bin/python -m bench.embedding_backends [--rounds 3] [--no-record]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.common import ROOT, SAMPLES, machine, stamp
from bench.record import record
from pipeline.analysis.embedding import Embedder, alert_text, export_dir_of
from pipeline.analysis.embedding_backends import BACKENDS
from pipeline.analysis.normalize import normalize
from pipeline.analysis.runbooks import load_chunks
from pipeline.config import Settings

SHARED = ROOT.parent / "shared" / "data" / "wazuh-alerts"
COMMAND = ".venv/bin/python -m bench.embedding_backends"
GOAL = "≥ 2× PyTorch texts/s with cosine ≥ 0.99 and top-5 identical ≥ 95 %"
MIN_COSINE, MIN_TOP5, MIN_SPEEDUP, TOP_K = 0.99, 0.95, 2.0, 5


@dataclass
class Result:
    backend: str
    load_s: float
    rates: list[float]
    ratios: list[float]
    cos_min: float = 1.0
    cos_mean: float = 1.0
    top5_same: float = 1.0
    top5_same_order: float = 1.0
    max_tie_gap: float = 0.0  # where the set differs: torch's score gap, 5th vs 6th passage

    @property
    def agrees(self) -> bool:
        return self.cos_min >= MIN_COSINE and self.top5_same >= MIN_TOP5


def embed_stage_texts() -> tuple[list[str], dict[str, int]]:
    """Distinct texts (the stage embeds one incident once) and how many came from where."""
    texts: dict[str, None] = {}
    counts: dict[str, int] = {}
    for name, path in (("dev alerts", SHARED / "alerts.jsonl"), ("samples", SAMPLES),
                       ("sample templates", SHARED / "sample-templates.jsonl")):
        lines = [ln for ln in path.read_bytes().splitlines() if ln.strip()] \
            if path.exists() else []
        before = len(texts)
        for line in lines:
            try:
                texts[alert_text(normalize(line, tenant_id="bench"))] = None
            except ValueError:  # a template the normaliser rejects is not an alert
                continue
        counts[name] = len(texts) - before
    return list(texts), counts


def top_k(queries: np.ndarray, passages: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ passages.T), axis=1, kind="stable")[:, :TOP_K]


def measure(rounds: int, export_dir: Path) -> tuple[list[Result], dict[str, int], int]:
    texts, counts = embed_stage_texts()
    passages = [c.embedding_text() for c in load_chunks(ROOT / "runbooks")]
    embedders: dict[str, Embedder] = {}
    results: dict[str, Result] = {}
    for backend in BACKENDS:  # export (first time only) and load, then warm up
        started = time.perf_counter()
        embedders[backend] = Embedder(backend=backend, export_dir=export_dir)
        results[backend] = Result(backend, time.perf_counter() - started, [], [])
        embedders[backend].embed_uncached(texts[:32])
    vectors: dict[str, np.ndarray] = {}
    for _ in range(rounds):
        for backend, embedder in embedders.items():
            started = time.perf_counter()
            vectors[backend] = embedder.embed_uncached(texts)
            results[backend].rates.append(len(texts) / (time.perf_counter() - started))
        for result in results.values():
            result.ratios.append(result.rates[-1] / results["torch"].rates[-1])
    reference = vectors["torch"]
    reference_passages = embedders["torch"].embed_uncached(passages)
    reference_top = top_k(reference, reference_passages)
    ranked = -np.sort(-(reference @ reference_passages.T), axis=1)
    for backend, result in results.items():
        cosine = (vectors[backend] * reference).sum(axis=1)
        result.cos_min, result.cos_mean = float(cosine.min()), float(cosine.mean())
        top = top_k(vectors[backend], embedders[backend].embed_uncached(passages))
        same = np.array([set(a) == set(b) for a, b in zip(top, reference_top, strict=True)])
        result.top5_same = float(same.mean())
        gaps = ranked[~same, TOP_K - 1] - ranked[~same, TOP_K]
        result.max_tie_gap = float(gaps.max()) if gaps.size else 0.0
        result.top5_same_order = float(np.mean((top == reference_top).all(axis=1)))
    return list(results.values()), counts, len(passages)


def choose(results: list[Result]) -> Result:
    """The fastest backend whose vectors agree with torch's (torch itself otherwise)."""
    agreeing = [r for r in results if r.agrees]
    return max(agreeing, key=lambda r: statistics.median(r.ratios))


def section(results: list[Result], chosen: Result, counts: dict[str, int], passages: int,
            load: tuple[list[str], list[str]], rounds: int) -> str:
    rows = "\n".join(
        f"| {r.backend} | {statistics.median(r.rates):.1f} | "
        f"{statistics.median(r.ratios):.2f}× ({min(r.ratios):.2f}–{max(r.ratios):.2f}) | "
        f"{r.cos_min:.4f} / {r.cos_mean:.4f} | {100 * r.top5_same:.1f} % "
        f"({100 * r.top5_same_order:.1f} %) | {r.max_tie_gap:.4f} | {r.load_s:.1f} s |"
        for r in results)
    speedup = statistics.median(chosen.ratios)
    met = speedup >= MIN_SPEEDUP and chosen.agrees
    sources = ", ".join(f"{n} {k}" for k, n in counts.items())
    return (
        "\n## Embedding backends: PyTorch, ONNX Runtime, int8, OpenVINO f32/bf16 (issue 15) — "
        f"`bench/embedding_backends.py`\n\nRun: `{COMMAND} --rounds {rounds}`\n\n"
        f"{stamp()} — {machine()}; load average {' '.join(load[0])} before, "
        f"{' '.join(load[1])} after.\n\n"
        f"{sum(counts.values())} distinct texts as the embed stage builds them ({sources}); "
        f"{passages} runbook passages; batch 32; {rounds} interleaved rounds (texts/s: "
        "median; speed-up: median of the per-round ratios to torch, range in brackets). "
        "Top-5: each backend's own passage vectors, same set as torch's (same order); "
        "where the set differs, torch's own scores of its 5th and 6th passage were this "
        "close (a small gap: a near-tie flipped).\n\n"
        "| backend | texts/s | × torch | cosine to torch min / mean | top-5 identical | "
        "5th–6th gap where different | load / export |\n"
        f"| --- | --- | --- | --- | --- | --- | --- |\n{rows}\n\n"
        f"Chosen: **{chosen.backend}** (the fastest whose cosine ≥ {MIN_COSINE} for every "
        f"text and top-5 identical ≥ {100 * MIN_TOP5:.0f} %), `embed.backend_speedup` = "
        f"{speedup:.2f}. Goal ({GOAL}): **{'met' if met else 'not met'}**.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--export-dir", type=Path, default=export_dir_of(Settings()))
    parser.add_argument("--no-record", action="store_true",
                        help="print only; no docs/benchmarks.{json,md}")
    args = parser.parse_args()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    results, counts, passages = measure(args.rounds, args.export_dir)
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    chosen = choose(results)
    text = section(results, chosen, counts, passages, (load_before, load_after), args.rounds)
    print(text)
    if args.no_record:
        return
    record("embed.backend_speedup", round(statistics.median(chosen.ratios), 2), goal=GOAL,
           command=f"{COMMAND} --rounds {args.rounds}")
    with (ROOT / "docs" / "benchmarks.md").open("a") as out:
        out.write(text)


if __name__ == "__main__":
    main()
