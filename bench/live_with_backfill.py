"""Live alerts while a backfill runs (issue #5): what the batch lane buys.

One worker (all four stages) on the embedded stack, one run, two phases side by side:

(a) a steady live stream alone: distinct alerts made from the samples (unique fingerprints
    and incident keys, so each needs its own LLM call), published to alerts.raw at a fixed
    interval the CPU vLLM keeps up with;
(b) the same kind of stream (other alerts, same rate) while a backfill of a few thousand
    alerts is replayed into alerts.backfill by the real backfill runner (priority "batch",
    default rate limit) — mostly storms, as real archives are, plus distinct alerts that
    keep asking for the LLM.

Live latency is end to end, publish → verdict row (`verdicts.created_at`), p50/p95 in
each phase. The backfill's rate is its verdict rows created during (b) per second.

Run: .venv/bin/python -m bench.live_with_backfill [--live 25 --interval 6 --backfill 3000]
Needs the embedded stack (`secanalyst dev up`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from aiokafka import AIOKafkaProducer
from psycopg_pool import AsyncConnectionPool

from bench.common import (
    ROOT,
    isolated_settings,
    machine,
    new_run_id,
    stamp,
    storm_alerts,
    varied_alerts,
)
from pipeline.analysis.normalize import normalize
from pipeline.analysis.runbook_loader import load_runbooks
from pipeline.config import Settings
from pipeline.kafka.admin import ensure_topics
from pipeline.kafka.messaging import PRIORITY_HEADER, TENANT_HEADER
from pipeline.logging import configure_logging
from pipeline.runtime import STAGES
from pipeline.sources.backfill.checkpoint import CheckpointStore
from pipeline.sources.backfill.command import backfill_sink, write_gzip_lines
from pipeline.sources.backfill.filters import AlertFilter
from pipeline.sources.backfill.ratelimit import TokenBucket
from pipeline.sources.backfill.runner import Backfill
from pipeline.store.database import open_pool
from pipeline.worker import run_worker


def distinct_alerts(count: int, *, seed: int = 21) -> list[bytes]:
    """`count` alerts from the samples that each need their own LLM call: unique
    fingerprints and incident keys, so neither storm nor near-duplicate reuse applies."""
    out: list[bytes] = []
    fingerprints: set[str] = set()
    incidents: set[str] = set()
    for line in varied_alerts(count * 4 + 40, seed=seed):
        alert = normalize(line, tenant_id="any")
        if alert.fingerprint in fingerprints or alert.incident_key in incidents:
            continue
        fingerprints.add(alert.fingerprint)
        if alert.incident_key:
            incidents.add(alert.incident_key)
        out.append(line)
        if len(out) == count:
            return out
    raise ValueError(f"only {len(out)} distinct alerts could be made, {count} asked")


def backfill_alerts(count: int, *, distinct_share: float = 0.2, seed: int = 5) -> list[bytes]:
    """A backfill archive: storms of 100 alerts (one LLM call each), plus a share of
    distinct alerts that keep asking for the LLM; shuffled."""
    n_distinct = int(count * distinct_share)
    storms = [line for i in range((count - n_distinct + 99) // 100)
              for line in storm_alerts(100, source_ip=f"203.0.113.{i + 1}", seed=seed + i)]
    lines = storms[:count - n_distinct] + varied_alerts(n_distinct, seed=seed + 1000)
    random.Random(seed).shuffle(lines)
    return lines


async def publish_stream(settings: Settings, alerts: list[bytes], tenant: str,
                         interval_s: float) -> dict[str, datetime]:
    """Publish one live alert every `interval_s`; alert id → when it was sent."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
    await producer.start()
    headers = [(TENANT_HEADER, tenant.encode()), (PRIORITY_HEADER, b"live")]
    sent: dict[str, datetime] = {}
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        for n, line in enumerate(alerts):
            await asyncio.sleep(max(0.0, started + n * interval_s - loop.time()))
            sent[normalize(line, tenant_id=tenant).alert_id] = datetime.now(UTC)
            await producer.send_and_wait(settings.kafka.topics.raw, line, headers=headers)
    finally:
        await producer.stop()
    return sent


async def verdict_times(pool: AsyncConnectionPool, tenant: str) -> dict[str, datetime]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT alert_id, created_at FROM verdicts WHERE tenant_id = %s", (tenant,))
        return {alert_id: created for alert_id, created in await cur.fetchall()}


async def wait_for_verdicts(pool: AsyncConnectionPool, tenant: str, ids: set[str],
                            timeout_s: float) -> dict[str, datetime]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        found = await verdict_times(pool, tenant)
        if ids <= found.keys():
            return {i: found[i] for i in ids}
        if loop.time() > deadline:
            raise TimeoutError(f"{tenant}: {len(ids & found.keys())}/{len(ids)} verdicts "
                               f"after {timeout_s:.0f} s")
        await asyncio.sleep(0.5)


@dataclass
class Phase:
    latencies: list[float]
    started: datetime
    ended: datetime
    load: tuple[float, float, float]

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q))


async def live_phase(settings: Settings, pool: AsyncConnectionPool, alerts: list[bytes],
                     tenant: str, interval_s: float) -> Phase:
    started = datetime.now(UTC)
    sent = await publish_stream(settings, alerts, tenant, interval_s)
    done = await wait_for_verdicts(pool, tenant, set(sent), timeout_s=600)
    latencies = [(done[i] - sent[i]).total_seconds() for i in sent]
    return Phase(latencies, started, max(done.values()), os.getloadavg())


async def replay_backfill(settings: Settings, archive: Path, state: Path, tenant: str) -> int:
    async with backfill_sink(settings) as sink:  # the one producer path, as the CLI's
        job = Backfill(sink, CheckpointStore(state), tenant_id=tenant,
                       alert_filter=AlertFilter(),
                       bucket=TokenBucket(settings.ingest.backfill_rate_per_s),
                       chunk_size=settings.ingest.backfill_chunk,
                       max_in_flight=settings.ingest.backfill_in_flight)
        report = await job.run([archive])
    return report.total("published")


async def backfill_counts(pool: AsyncConnectionPool, tenant: str, since: datetime,
                          until: datetime) -> tuple[int, int]:
    """(verdicts, of which fresh LLM verdicts) created in [since, until]."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE reused_from IS NULL) FROM verdicts "
            "WHERE tenant_id = %s AND created_at BETWEEN %s AND %s", (tenant, since, until))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def run(n_live: int, interval_s: float, n_backfill: int) -> dict[str, object]:
    run_id = new_run_id("lb")
    settings = isolated_settings(run_id)
    live_tenant, batch_tenant = f"live-{run_id}", f"backfill-{run_id}"
    live = distinct_alerts(2 * n_live + 2)
    warm, stream_a, stream_b = live[:2], live[2:2 + n_live], live[2 + n_live:]
    backfill = backfill_alerts(n_backfill)
    await ensure_topics(settings)
    await load_runbooks(settings, ROOT / "runbooks")
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(settings, STAGES, stop))
    pool = await open_pool(settings)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-lanes-") as tmp:
            archive = Path(tmp) / "archive.json.gz"
            write_gzip_lines(archive, backfill)
            # Warm up both lanes: models loaded, consumer groups joined.
            await live_phase(settings, pool, warm, f"warm-{run_id}", 0)
            warm_archive = Path(tmp) / "warm.json.gz"
            write_gzip_lines(warm_archive, distinct_alerts(1, seed=99))
            await replay_backfill(settings, warm_archive, Path(tmp) / "warm", f"warm-{run_id}")
            await wait_for_verdicts(pool, f"warm-{run_id}", {
                normalize(distinct_alerts(1, seed=99)[0], tenant_id="x").alert_id},
                timeout_s=300)
            load_before = os.getloadavg()
            alone = await live_phase(settings, pool, stream_a, live_tenant, interval_s)
            replay = asyncio.create_task(
                replay_backfill(settings, archive, Path(tmp) / "state", batch_tenant))
            both = await live_phase(settings, pool, stream_b, live_tenant, interval_s)
            published = await replay
            verdicts, fresh = await backfill_counts(pool, batch_tenant, both.started,
                                                    both.ended)
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 120)
        await pool.close()
    seconds = (both.ended - both.started).total_seconds()
    return {"alone": alone, "both": both, "load_before": load_before,
            "published": published, "backfill_verdicts": verdicts, "backfill_fresh": fresh,
            "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", type=int, default=25, help="live alerts per phase")
    parser.add_argument("--interval", type=float, default=6.0, help="seconds between them")
    parser.add_argument("--backfill", type=int, default=3000, help="alerts in the backfill")
    args = parser.parse_args()
    configure_logging("WARNING", "console")
    r = asyncio.run(run(args.live, args.interval, args.backfill))
    alone, both = r["alone"], r["both"]
    assert isinstance(alone, Phase) and isinstance(both, Phase)
    seconds = float(r["seconds"])  # type: ignore[arg-type]
    verdicts = int(r["backfill_verdicts"])  # type: ignore[call-overload]
    load = "/".join(f"{x:.1f}" for x in r["load_before"])  # type: ignore[attr-defined]
    print(f"{stamp()} — {machine()}; load average (1/5/15 min) {load} before (a), "
          f"{'/'.join(f'{x:.1f}' for x in alone.load)} after (a), "
          f"{'/'.join(f'{x:.1f}' for x in both.load)} after (b)")
    print(f"live: {args.live} distinct alerts per phase, one every {args.interval:g} s; "
          f"backfill: {r['published']:,} alerts (80 % storms of 100, 20 % varied)")
    print("| measure | (a) live alone | (b) live + backfill |")
    print("| --- | --- | --- |")
    print(f"| live end-to-end latency p50 | {alone.pct(50):.1f} s | {both.pct(50):.1f} s |")
    print(f"| live end-to-end latency p95 | {alone.pct(95):.1f} s | {both.pct(95):.1f} s |")
    print(f"| live end-to-end latency max | {max(alone.latencies):.1f} s | "
          f"{max(both.latencies):.1f} s |")
    print(f"| backfill into verdicts during (b) | — | {verdicts:,} verdicts in {seconds:.0f} s "
          f"= {verdicts / seconds:.2f} alerts/s ({r['backfill_fresh']} fresh LLM verdicts) |")


if __name__ == "__main__":
    main()
