"""Pipeline throughput on the embedded stack (issue #2).

A. alerts/s through normalize → embed → retrieve (real Tansu, PostgreSQL + pgvector,
   MiniLM) next to the embedding model's own texts/s on the same texts, same run: the
   ceiling of the embed stage on this machine.
B. verdicts/min end to end (Kafka in → verdict rows out) with the real vLLM on CPU.

Run: .venv/bin/python bench/pipeline_throughput.py [--alerts 400] [--verdicts 40]
Needs the embedded stack (`secanalyst dev up`) and loaded runbooks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

from bench.common import (
    count_topic,
    isolated_settings,
    machine,
    new_run_id,
    sample_documents,
    stamp,
    varied_alerts,
)
from pipeline.analysis.embedding import Embedder, alert_text
from pipeline.analysis.normalize import normalize
from pipeline.kafka.admin import ensure_topics
from pipeline.logging import configure_logging
from pipeline.sources.ingest_file import publish_lines
from pipeline.store.database import open_pool
from pipeline.worker import run_worker


async def stages_a(n_alerts: int) -> dict[str, float]:
    settings = isolated_settings(new_run_id("ba"))
    alerts = varied_alerts(n_alerts)
    texts = [alert_text(normalize(a, tenant_id="bench")) for a in alerts]
    # The ceiling: the model alone on the same texts (after a warm-up batch).
    embedder = Embedder()
    embedder.embed_uncached(texts[:32])
    started = time.perf_counter()
    embedder.embed_uncached(texts)
    model_rate = len(texts) / (time.perf_counter() - started)
    del embedder

    await ensure_topics(settings)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, ["normalize", "embed", "retrieve"], stop))
    # Warm up: start the consumers and load the model before the clock starts.
    warm = varied_alerts(8, seed=99)
    await publish_lines(settings, warm, tenant_id="bench-warm")
    await count_topic(settings, settings.kafka.topics.enriched, len(warm), 300)
    started = time.perf_counter()
    await publish_lines(settings, alerts, tenant_id="bench")
    await count_topic(settings, settings.kafka.topics.enriched, len(warm) + n_alerts, 1800)
    pipeline_rate = n_alerts / (time.perf_counter() - started)
    stop.set()
    with contextlib.suppress(Exception):
        await worker
    return {"model_texts_per_s": model_rate, "pipeline_alerts_per_s": pipeline_rate}


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
    assert usage and explained
    del docs
    return {"verdicts": done, "seconds": elapsed, "verdicts_per_min": 60 * done / elapsed,
            "llm_calls": usage[0], "input_tokens": usage[1] or 0,
            "output_tokens": usage[2] or 0, "ttft_p50_ms": usage[3] or 0,
            "ttft_p95_ms": usage[4] or 0, "explained": explained[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=400)
    parser.add_argument("--verdicts", type=int, default=40)
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    a = asyncio.run(stages_a(args.alerts))
    b = asyncio.run(stages_b(args.verdicts))
    print(f"# pipeline throughput — {stamp()} — {machine()}")
    print(f"A  {args.alerts} distinct alerts through normalize → embed → retrieve")
    print(f"   embedding model alone, same texts : {a['model_texts_per_s']:7.1f} texts/s")
    print(f"   pipeline (Kafka in → enriched out): {a['pipeline_alerts_per_s']:7.1f} alerts/s"
          f"  ({a['pipeline_alerts_per_s'] / a['model_texts_per_s']:.2f} of the model's rate)")
    print(f"B  {b['verdicts']} verdicts end to end with real vLLM (SmolLM2-135M, CPU)")
    print(f"   {b['verdicts_per_min']:.1f} verdicts/min over {b['seconds']:.0f}s; "
          f"{b['explained']} explained, {b['verdicts'] - b['explained']} needs-review; "
          f"{b['llm_calls']} LLM calls, {b['input_tokens']} in / {b['output_tokens']} out "
          f"tokens; TTFT p50 {b['ttft_p50_ms']:.0f} ms, p95 {b['ttft_p95_ms']:.0f} ms")


if __name__ == "__main__":
    main()
