"""Pipeline throughput on the embedded stack (issue #2).

A. alerts/s through normalize → embed → retrieve (real Tansu, PostgreSQL + pgvector,
   MiniLM) next to the embedding model's own texts/s on the same texts, same run: the
   ceiling of the embed stage on this machine.
B. verdicts/min end to end (Kafka in → verdict rows out) with the real vLLM on CPU.

Run: .venv/bin/python -m bench.pipeline_throughput [--alerts 400] [--verdicts 40] [--one-process]
Needs the embedded stack (`secanalyst dev up`); migrates the database and loads the
runbooks first (both idempotent), as `secanalyst demo` does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from bench.common import (
    count_topic,
    isolated_settings,
    machine,
    new_run_id,
    sample_documents,
    stamp,
    storm_alerts,
    varied_alerts,
)
from bench.pipeline_processes import (
    cpu_seconds,
    scraped_batch_seconds,
    service_cpu,
    stage_cpu,
    stage_processes,
)
from bench.pipeline_profile import (
    STAGES,
    StageTime,
    batch_seconds,
    delta,
    enriched_timestamps,
    hop_latencies,
    profile_shares,
)
from bench.record import record
from pipeline.analysis.embedding import Embedder, alert_text, export_dir_of
from pipeline.analysis.normalize import normalize
from pipeline.analysis.runbook_loader import load_runbooks
from pipeline.config import Settings
from pipeline.kafka.admin import delete_topics, ensure_topics
from pipeline.logging import configure_logging
from pipeline.sources.ingest_file import publish_lines
from pipeline.store.database import open_pool
from pipeline.store.migrate import migrate
from pipeline.worker import run_worker


async def _pipeline_rate(settings: Settings, alerts: list[bytes], tenant: str,
                         already: int) -> tuple[float, float]:
    """(wall clock when the first alert went in, alerts/s until this process saw all of
    them in `alerts.enriched`)."""
    started_wall, started = time.time(), time.perf_counter()
    await publish_lines(settings, alerts, tenant_id=tenant)
    await count_topic(settings, settings.kafka.topics.enriched, already + len(alerts), 1800)
    return started_wall, len(alerts) / (time.perf_counter() - started)


async def rate_to_last_out(settings: Settings, tenant: str, count: int,
                           started_wall: float) -> float:
    """Alerts/s from the first alert in to the last one out: the last enriched record's
    timestamp, set when the retrieve stage sends it. The bench's own reader sees it up
    to its fetch wait later (500 ms: Tansu answers a fetch with no data only at the
    end of the wait), which is not the pipeline's time."""
    stamps = await enriched_timestamps(settings, {tenant})
    if len(stamps) < count:
        raise RuntimeError(f"{tenant}: {len(stamps)}/{count} enriched alerts")
    return count / (max(stamps.values()) / 1000 - started_wall)


def distinct_alerts(count: int) -> list[bytes]:
    """varied_alerts, each on an agent of its own: a fingerprint of its own, so the embed
    stage's cache (one vector an incident) cannot serve any of them — the model embeds all
    `count`, as in the ceiling. (varied_alerts alone repeat 154 fingerprints in 400: some
    rules' incidents do not depend on the address or user varied.) The agent is not in
    the embedded text: the texts are the ones the ceiling encodes."""
    out = []
    for n, raw in enumerate(varied_alerts(count)):
        doc = json.loads(raw)
        agent = doc.setdefault("agent", {})
        agent["name"] = f"{agent.get('name', 'agent')}-{n}"
        out.append(json.dumps(doc).encode())
    return out


def ceiling_model(settings: Settings, texts: list[str]) -> Embedder:
    """The model for the ceiling: the stage's engine, batch size and length batching, with
    every core to itself (threads=0 whatever the stage is set to); warmed up."""
    embedder = Embedder(settings.embedding.model_path, batch_size=settings.embedding.batch_size,
                        backend=settings.embedding.backend,
                        export_dir=export_dir_of(settings), threads=0)
    embedder.embed_uncached(texts[:32])
    return embedder


def model_rate(embedder: Embedder, texts: list[str]) -> tuple[float, float]:
    """(texts/s, CPU ms a text) of the model alone on `texts` in one call."""
    cpu, started = time.process_time(), time.perf_counter()
    embedder.embed_uncached(texts)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return len(texts) / elapsed, 1000 * cpu / len(texts)


Snapshot = Callable[[], tuple[dict[str, StageTime], dict[str, float]]]


@contextlib.asynccontextmanager
async def in_process(settings: Settings) -> AsyncIterator[Snapshot]:
    """The three stages in this process (`secanalyst run` without --stage): CPU split into
    the event loop thread (stages, Kafka, PostgreSQL client) and the model's threads."""
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, ["normalize", "embed", "retrieve"], stop))
    pid, loop_thread = os.getpid(), threading.get_native_id()

    def snapshot() -> tuple[dict[str, StageTime], dict[str, float]]:
        loop = cpu_seconds(pid, loop_thread)
        return batch_seconds(), {"event loop (3 stages)": loop,
                                 "model threads": cpu_seconds(pid) - loop,
                                 **service_cpu(settings)}
    try:
        yield snapshot
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await worker


@contextlib.asynccontextmanager
async def as_processes(settings: Settings) -> AsyncIterator[Snapshot]:
    """One `secanalyst run --stage` process a stage, as deployed."""
    with stage_processes(settings) as processes:
        yield lambda: (scraped_batch_seconds(processes),
                       {**stage_cpu(processes), **service_cpu(settings)})


async def stages_a(n_alerts: int, n_storm: int, profile: bool,
                   one_process: bool, idle_s: float = 10.0) -> dict[str, Any]:
    """Distinct alerts, then one storm, through the three stages; the model alone on the
    distinct texts (same engine and batching) is the ceiling both are compared to."""
    settings = isolated_settings(new_run_id("ba"))
    alerts = distinct_alerts(n_alerts)
    storm = storm_alerts(n_storm, seed=5)
    texts = [alert_text(normalize(a, tenant_id="bench")) for a in alerts]
    model = ceiling_model(settings, texts)
    rate_before, model_cpu_ms = model_rate(model, texts)
    await ensure_topics(settings)
    one_process = one_process or profile  # cProfile sees this process only
    stages = in_process(settings) if one_process else as_processes(settings)
    async with stages as snapshot:
        # Warm up: consumers joined and the model loaded before the clock starts.
        warm = varied_alerts(8, seed=99)
        await publish_lines(settings, warm, tenant_id="bench-warm")
        await count_topic(settings, settings.kafka.topics.enriched, len(warm), 600)
        # The fixed part: what the stages (their consumers polling) and the broker and its
        # storage spend with nothing to do, counted in the runs' windows too.
        idle_start = snapshot()
        await asyncio.sleep(idle_s)
        before = snapshot()
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        distinct_in, distinct_seen = await _pipeline_rate(settings, alerts, "bench",
                                                          len(warm))
        if profiler:
            profiler.disable()
        mid = snapshot()
        storm_in, storm_seen = await _pipeline_rate(settings, storm, "bench-storm",
                                                    len(warm) + n_alerts)
        after = snapshot()
    # The ceiling again, after: the load of a shared machine moves during the run.
    rate_after, _ = model_rate(model, texts)
    hops = await hop_latencies(settings, {"bench"})
    distinct_rate = await rate_to_last_out(settings, "bench", n_alerts, distinct_in)
    storm_rate = await rate_to_last_out(settings, "bench-storm", n_storm, storm_in)
    await delete_topics(settings)  # this run's own: left behind, every run adds ten
    return {"backend": model.backend, "model_rates": (rate_before, rate_after),
            "model_texts_per_s": (rate_before + rate_after) / 2,
            "model_cpu_ms": model_cpu_ms,
            "mode": "one process" if one_process else "a process a stage",
            "pipeline_alerts_per_s": distinct_rate, "storm_alerts_per_s": storm_rate,
            "seen_rates": (distinct_seen, storm_seen),
            "distinct_batches": delta(before[0], mid[0]), "storm_batches": delta(mid[0], after[0]),
            "distinct_cpu": _cpu_delta(before[1], mid[1]),
            "storm_cpu": _cpu_delta(mid[1], after[1]),
            "idle_cpu_per_s": {name: sec / idle_s
                               for name, sec in _cpu_delta(idle_start[1], before[1]).items()},
            "hops": hops, "profile": profile_shares(profiler) if profiler else {}}


def _cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in after}


async def stages_b(n_verdicts: int) -> dict[str, float]:
    run_id = new_run_id("bb")
    settings = isolated_settings(run_id)
    tenant = f"bench-{run_id}"
    docs = sample_documents()
    alerts = varied_alerts(n_verdicts, seed=11)
    await ensure_topics(settings)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, ["normalize", "embed", "retrieve",
                                                       "explain"], stop))
    pool = await open_pool(settings)
    await asyncio.sleep(15)  # consumers joined, models loaded
    started = time.perf_counter()
    await publish_lines(settings, alerts, tenant_id=tenant)
    done = 0
    while done < n_verdicts and time.perf_counter() - started < 3600:
        await asyncio.sleep(1)
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*), sum(output_tokens) FROM verdicts WHERE tenant_id = %s",
                (tenant,))
            row = await cur.fetchone()
        done = int(row[0]) if row else 0
    elapsed = time.perf_counter() - started
    async with pool.connection() as conn:
        cur = await conn.execute(
            """SELECT count(*), sum(input_tokens), sum(output_tokens),
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ms),
                      percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms)
               FROM llm_usage_events WHERE tenant_id = %s""", (tenant,))
        usage = await cur.fetchone()
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'explained') FROM verdicts "
            "WHERE tenant_id = %s", (tenant,))
        explained = await cur.fetchone()
    stop.set()
    with contextlib.suppress(Exception):
        await worker
    await pool.close()
    await delete_topics(settings)
    assert usage and explained
    del docs
    return {"verdicts": done, "seconds": elapsed, "verdicts_per_min": 60 * done / elapsed,
            "llm_calls": usage[0], "input_tokens": usage[1] or 0,
            "output_tokens": usage[2] or 0, "ttft_p50_ms": usage[3] or 0,
            "ttft_p95_ms": usage[4] or 0, "explained": explained[0]}


COMMAND = ".venv/bin/python -m bench.pipeline_throughput --alerts 400 --storm 400 --verdicts 0"


def report_a(a: dict[str, Any], n_alerts: int, n_storm: int) -> None:
    model = a["model_texts_per_s"]
    distinct, storm = a["pipeline_alerts_per_s"], a["storm_alerts_per_s"]
    print(f"A  {n_alerts} distinct alerts, then a storm of {n_storm}, through normalize → "
          f"embed → retrieve (embedding backend: {a['backend']})")
    print(f"   embedding model alone, same texts : {model:7.1f} texts/s (before "
          f"{a['model_rates'][0]:.1f}, after {a['model_rates'][1]:.1f})")
    print(f"   pipeline, distinct alerts         : {distinct:7.1f} alerts/s"
          f"  ({distinct / model:.2f} of the model's rate; goal ≥ 0.8)")
    print(f"   pipeline, storm                   : {storm:7.1f} alerts/s"
          f"  ({storm / model:.2f} of the model's rate; goal ≥ 1.5)")
    print(f"   (first in → last out, by the last enriched record's timestamp; as this "
          f"process saw them: {a['seen_rates'][0]:.1f} and {a['seen_rates'][1]:.1f} "
          f"alerts/s, its reader up to 500 ms late)")
    print(f"   CPU per alert (ms; model alone: {a['model_cpu_ms']:.1f} ms a text; "
          f"stages run {a['mode']}; the stack's tansu, weed, postgres are shared):")
    for label, n in (("distinct_cpu", n_alerts), ("storm_cpu", n_storm)):
        parts = "  ".join(f"{name} {1000 * sec / n:5.1f}" for name, sec in a[label].items())
        total = 1000 * sum(a[label].values()) / n
        print(f"     {label.split('_')[0]:9s} {parts}  all {total:5.1f}"
              f"  (model alone / all: {a['model_cpu_ms'] / total:.2f})")
    idle = a["idle_cpu_per_s"]
    window_s = n_alerts / distinct
    print(f"   idle, stages running (ms CPU a second; × the distinct window of {window_s:.1f} s "
          f"= {1000 * sum(idle.values()) * window_s / n_alerts:.1f} ms an alert):")
    print("     " + "  ".join(f"{name} {1000 * sec:5.1f}" for name, sec in idle.items()))
    embed_busy = a["distinct_batches"]["embed"].seconds
    print(f"   embed stage busy {embed_busy:.2f} s of the distinct window's {window_s:.2f} s "
          f"({embed_busy / window_s:.0%}; fill and drain are the rest)")
    for label in ("distinct_batches", "storm_batches"):
        print(f"   batch time per stage ({label.split('_')[0]}; handle + commit):")
        for stage in STAGES:
            t = a[label][stage]
            mean = 1000 * t.seconds / t.batches if t.batches else 0.0
            print(f"     {stage:9s} {t.batches:5.0f} batches, {t.seconds:6.2f} s busy, "
                  f"{mean:7.1f} ms/batch")
    print("   one alert's path, distinct run (Kafka record timestamps; queueing included):")
    for hop, (p50, p95) in a["hops"].items():
        print(f"     {hop:9s} p50 {p50:7.0f} ms   p95 {p95:7.0f} ms")
    if a["profile"]:
        total = sum(a["profile"].values())
        print(f"   event loop thread, distinct run (cProfile own time, {total:.1f} s):")
        for category, seconds in a["profile"].items():
            print(f"     {category:26s} {seconds:6.2f} s  {100 * seconds / total:4.0f} %")


def record_a(a: dict[str, Any]) -> None:
    fraction = a["pipeline_alerts_per_s"] / a["model_texts_per_s"]
    storm = a["storm_alerts_per_s"] / a["model_texts_per_s"]
    met = fraction >= 0.8 and storm >= 1.5
    record("pipeline.fraction_of_embed_rate", round(fraction, 3),
           goal=f"≥ 0.8 on distinct alerts and storm ≥ 1.5 (storm: {storm:.2f}; backend "
                f"{a['backend']}; {'met' if met else 'not met'})", command=COMMAND)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=400)
    parser.add_argument("--storm", type=int, default=400)
    parser.add_argument("--verdicts", type=int, default=40, help="0: skip part B")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile the event loop thread during the distinct run "
                             "(slows it: not recorded)")
    parser.add_argument("--one-process", action="store_true",
                        help="the three stages in this process (default: a process a "
                             "stage, as deployed)")
    parser.add_argument("--idle-seconds", type=float, default=10.0,
                        help="measure the idle CPU of the stages and the stack this long "
                             "before the runs")
    parser.add_argument("--record", action="store_true",
                        help="record pipeline.fraction_of_embed_rate")
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    # Without the schema the stages wait out the missing table (a deploy ahead of its
    # migration) and the run would only time out.
    settings = Settings()
    migrate(settings.database_url)
    asyncio.run(load_runbooks(settings, Path("runbooks")))
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    a = asyncio.run(stages_a(args.alerts, args.storm, args.profile, args.one_process,
                             args.idle_seconds))
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"# pipeline throughput — {stamp()} — {machine()}")
    print(f"   load before: {load_before}\n   load after : {load_after}")
    report_a(a, args.alerts, args.storm)
    if args.record and not args.profile:
        record_a(a)
    if args.verdicts <= 0:
        return
    b = asyncio.run(stages_b(args.verdicts))
    print(f"B  {b['verdicts']} verdicts end to end with real vLLM (SmolLM2-135M, CPU)")
    print(f"   {b['verdicts_per_min']:.1f} verdicts/min over {b['seconds']:.0f}s; "
          f"{b['explained']} explained, {b['verdicts'] - b['explained']} needs-review; "
          f"{b['llm_calls']} LLM calls, {b['input_tokens']} in / {b['output_tokens']} out "
          f"tokens; TTFT p50 {b['ttft_p50_ms']:.0f} ms, p95 {b['ttft_p95_ms']:.0f} ms")


if __name__ == "__main__":
    main()
