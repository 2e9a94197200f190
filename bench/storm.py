"""Storm de-duplication benchmark (issue #4), on the embedded stack with real vLLM.

5,000 alerts of one brute-force storm (fresh ids, timestamps, ports, user names) plus 50
distinct alerts go through the whole pipeline. Reported: LLM calls (goal ≤ 1% of the
storm + the distinct ones), that every alert has a verdict row, tokens per 1,000 alerts
with de-duplication, and — measured on 50 storm alerts with de-duplication switched off —
without it; plus alerts/s of normalize → embed → retrieve on the storm next to the
embedding model's own texts/s on the same texts.

Near-storm (issue #10): one scanner against 30 agents, one alert each — 30 fingerprints of
one incident, explained concurrently. Single-flight makes them wait for the first call and
reuse its verdict; recorded as `storm.near_storm_llm_calls` (goal ≤ 2).

Run: .venv/bin/python -m bench.storm [--storm 5000] [--distinct 50] [--near-storm 30]
     .venv/bin/python -m bench.storm --near-storm-only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time

from bench.common import (
    STORM_TEMPLATE,
    count_topic,
    isolated_settings,
    machine,
    new_run_id,
    stamp,
    storm_alerts,
    varied_alerts,
)
from bench.record import record
from pipeline.analysis.embedding import Embedder, alert_text
from pipeline.analysis.normalize import normalize
from pipeline.config import Settings, StormSettings
from pipeline.kafka.admin import ensure_topics
from pipeline.logging import configure_logging
from pipeline.sources.ingest_file import publish_lines
from pipeline.store.database import open_pool
from pipeline.worker import run_worker

STAGES = ["normalize", "embed", "retrieve", "explain"]


def near_storm_alerts(agents: int, *, source_ip: str = "198.51.100.23", seed: int = 11,
                      level: int = 10) -> list[bytes]:
    """One scanner against a farm: the same rule and source on `agents` different agents,
    one alert each — one incident key, `agents` fingerprints (so they run concurrently)."""
    rng = random.Random(seed)
    out = []
    for n in range(agents):
        doc = json.loads(json.dumps(STORM_TEMPLATE))
        host = f"web-{n:02d}"
        doc["agent"] = {"id": f"{100 + n:03d}", "name": f"{host}.example.com",
                        "ip": f"10.0.20.{10 + n}"}
        doc["rule"]["level"] = level
        doc["rule"]["firedtimes"] = 1
        port = rng.randrange(30000, 65000)
        doc["timestamp"] = f"2026-11-27T11:00:{n % 60:02d}.{n:03d}+0000"
        doc["id"] = f"{1_796_000_000 + n}.{rng.randrange(10**8)}"
        doc["full_log"] = (f"Nov 27 11:00:{n % 60:02d} {host} sshd[{5000 + n}]: "
                           f"Invalid user admin from {source_ip} port {port}")
        doc["data"] = {"srcip": source_ip, "srcport": str(port), "srcuser": "admin"}
        out.append(json.dumps(doc).encode())
    return out


async def _run(settings: Settings, alerts: list[bytes], tenant: str,
               timeout_s: float) -> dict[str, float]:
    await ensure_topics(settings)
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, STAGES, stop))
    pool = await open_pool(settings)
    await asyncio.sleep(12)  # consumers joined, models loaded
    started = time.perf_counter()
    await publish_lines(settings, alerts, tenant_id=tenant)
    enriched_s = await count_topic(settings, settings.kafka.topics.enriched, len(alerts),
                                   timeout_s)
    done = 0
    while done < len(alerts) and time.perf_counter() - started < timeout_s:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) FROM verdicts WHERE tenant_id = %s",
                                     (tenant,))
            row = await cur.fetchone()
        done = int(row[0]) if row else 0
        if done < len(alerts):
            await asyncio.sleep(1)
    elapsed = time.perf_counter() - started
    await asyncio.sleep(1.5)  # usage writer flush
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*), coalesce(sum(total_tokens), 0) FROM llm_usage_events "
            "WHERE tenant_id = %s", (tenant,))
        calls, tokens = await cur.fetchone() or (0, 0)
        cur = await conn.execute(
            "SELECT count(*) FILTER (WHERE reused_from IS NOT NULL), max(seen_count) "
            "FROM verdicts WHERE tenant_id = %s", (tenant,))
        reused, max_seen = await cur.fetchone() or (0, 0)
    stop.set()
    with contextlib.suppress(Exception):
        await worker
    await pool.close()
    return {"alerts": len(alerts), "verdicts": done, "llm_calls": calls, "tokens": tokens,
            "reused": reused, "max_seen": max_seen or 0, "seconds": elapsed,
            "enrich_rate": len(alerts) / enriched_s}


def model_rate(texts: list[str]) -> float:
    embedder = Embedder()
    embedder.embed_uncached(texts[:32])
    started = time.perf_counter()
    embedder.embed_uncached(texts)
    return len(texts) / (time.perf_counter() - started)


NEAR_STORM_COMMAND = ".venv/bin/python -m bench.storm --near-storm-only"


def near_storm(agents: int) -> None:
    run_id = new_run_id("bn")
    result = asyncio.run(_run(isolated_settings(run_id), near_storm_alerts(agents),
                              f"bench-{run_id}", 1800))
    print(f"# near-storm — {stamp()} — {machine()}")
    print(f"one scanner, {agents} agents (one alert each, {agents} fingerprints, one "
          f"incident): {result['verdicts']} verdict rows, {result['reused']} reused, "
          f"{result['llm_calls']} LLM calls (goal ≤ 2) in {result['seconds']:.0f}s")
    record("storm.near_storm_llm_calls", int(result["llm_calls"]), goal="≤ 2",
           command=NEAR_STORM_COMMAND)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storm", type=int, default=5000)
    parser.add_argument("--distinct", type=int, default=50)
    parser.add_argument("--baseline", type=int, default=50,
                        help="storm alerts explained with de-duplication off")
    parser.add_argument("--near-storm", type=int, default=30,
                        help="agents hit by one scanner, one alert each")
    parser.add_argument("--near-storm-only", action="store_true",
                        help="run only the near-storm case")
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    if args.near_storm_only:
        near_storm(args.near_storm)
        return

    run_id = new_run_id("bs")
    storm = storm_alerts(args.storm, seed=int(time.time()))
    distinct = varied_alerts(args.distinct, seed=int(time.time()) + 1)
    alerts = storm + distinct
    texts = [alert_text(normalize(a, tenant_id="x")) for a in storm[:1000]]
    raw_rate = model_rate(texts)
    on = asyncio.run(_run(isolated_settings(run_id), alerts, f"bench-{run_id}", 3600))

    off_id = new_run_id("bo")
    off_settings = isolated_settings(off_id).model_copy(
        update={"storm": StormSettings(enabled=False)})
    off = asyncio.run(_run(off_settings, storm_alerts(args.baseline, seed=5),
                           f"bench-{off_id}", 1800))

    goal = 0.01 * args.storm + args.distinct
    per_k_on = 1000 * on["tokens"] / on["alerts"]
    per_k_off = 1000 * off["tokens"] / off["alerts"]
    print(f"# storm de-duplication — {stamp()} — {machine()}")
    print(f"storm {args.storm} + distinct {args.distinct} = {on['alerts']} alerts; "
          f"{on['verdicts']} verdict rows ({on['reused']} reused; original seen "
          f"{on['max_seen']} times) in {on['seconds']:.0f}s")
    print(f"LLM calls: {on['llm_calls']} (goal ≤ {goal:.0f}: 1% of the storm + distinct)")
    print(f"tokens per 1,000 alerts: {per_k_on:,.0f} with de-duplication; "
          f"{per_k_off:,.0f} without ({off['alerts']} storm alerts, de-duplication off, "
          f"{off['llm_calls']} calls) — {per_k_off / max(per_k_on, 1):.0f}x fewer")
    print(f"normalize → embed → retrieve on the storm workload: {on['enrich_rate']:.1f} "
          f"alerts/s vs the embedding model alone {raw_rate:.1f} texts/s "
          f"({on['enrich_rate'] / raw_rate:.1f}x: the embed stage never embeds one "
          f"incident twice)")
    near_storm(args.near_storm)


if __name__ == "__main__":
    main()
