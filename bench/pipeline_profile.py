"""Where the time of normalize → embed → retrieve goes (issue 15, "measure where the time
goes"): per-stage batch time from the stages' own histogram, per-hop latency of each alert
from the Kafka record timestamps, and the event loop thread's CPU by library (cProfile)."""

from __future__ import annotations

import cProfile
import pstats
import statistics
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY

from pipeline.analysis.normalize import NormalizationError, normalize
from pipeline.config import Settings
from pipeline.kafka.messaging import ALERT_HEADER

STAGES = ("normalize", "embed", "retrieve")


@dataclass(frozen=True)
class StageTime:
    batches: float
    seconds: float


def batch_seconds() -> dict[str, StageTime]:
    """secanalyst_stage_batch_seconds (handle + commit of one batch), summed over lanes."""
    totals = {stage: [0.0, 0.0] for stage in STAGES}
    for metric in REGISTRY.collect():
        if metric.name != "secanalyst_stage_batch_seconds":
            continue
        for sample in metric.samples:
            stage = sample.labels.get("stage", "")
            if stage not in totals:
                continue
            if sample.name.endswith("_count"):
                totals[stage][0] += sample.value
            elif sample.name.endswith("_sum"):
                totals[stage][1] += sample.value
    return {stage: StageTime(*pair) for stage, pair in totals.items()}


def delta(before: dict[str, StageTime], after: dict[str, StageTime]) -> dict[str, StageTime]:
    return {s: StageTime(after[s].batches - before[s].batches,
                         after[s].seconds - before[s].seconds) for s in STAGES}


async def _timestamps(settings: Settings, topic: str, raw: bool,
                      tenants: set[str]) -> dict[str, int]:
    """alert id → the record's timestamp (ms) for every record of `topic`."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    out: dict[str, int] = {}
    try:
        while True:
            batches = await consumer.getmany(timeout_ms=1500)
            if not batches:
                return out
            for records in batches.values():
                for r in records:
                    headers = {k: v.decode() for k, v in r.headers or ()}
                    tenant = headers.get("tenant_id", "")
                    if raw:
                        try:
                            alert_id = normalize(r.value, tenant_id=tenant).alert_id
                        except NormalizationError:
                            continue
                    else:
                        alert_id = headers.get(ALERT_HEADER, "")
                    if tenant in tenants:
                        out[alert_id] = r.timestamp
    finally:
        await consumer.stop()


async def hop_latencies(settings: Settings, tenants: set[str]) -> dict[str, tuple[float, float]]:
    """p50/p95 ms of each hop of one alert's path: Kafka in (raw) → normalized → embedded →
    enriched, from the producers' record timestamps (queueing included)."""
    topics = settings.kafka.topics
    order = [("raw", topics.raw), ("normalize", topics.normalized),
             ("embed", topics.embedded), ("retrieve", topics.enriched)]
    stamps = [await _timestamps(settings, topic, name == "raw", tenants) for name, topic in order]
    out: dict[str, tuple[float, float]] = {}
    for i in range(1, len(order)):
        out[order[i][0]] = _p50_p95([stamps[i][a] - stamps[i - 1][a]
                                     for a in stamps[i] if a in stamps[i - 1]])
    out["total"] = _p50_p95([stamps[-1][a] - stamps[0][a] for a in stamps[-1] if a in stamps[0]])
    return out


async def enriched_timestamps(settings: Settings, tenants: set[str]) -> dict[str, int]:
    """alert id → its enriched record's timestamp (ms), for the alerts of `tenants`."""
    return await _timestamps(settings, settings.kafka.topics.enriched, False, tenants)


def _p50_p95(values: list[int]) -> tuple[float, float]:
    if len(values) < 2:
        return (float("nan"), float("nan"))
    cuts = statistics.quantiles(values, n=20)
    return (statistics.median(values), cuts[18])


# What a frame's file says about the work it does (first match wins).
CATEGORIES = (("poll", "event loop wait (epoll)"), ("pydantic", "pydantic (de)serialize"),
              ("orjson", "json (de)serialize"),
              ("json/", "json (de)serialize"), ("psycopg", "PostgreSQL client"),
              ("pgvector", "PostgreSQL client"), ("aiokafka", "Kafka client"),
              ("faststream", "Kafka client"), ("pipeline/analysis", "normalize/analysis"),
              ("selectors", "event loop wait"), ("asyncio", "asyncio"),
              ("opentelemetry", "tracing"), ("structlog", "logging"),
              ("prometheus", "metrics"), ("pipeline/", "pipeline glue"))


def profile_shares(profiler: cProfile.Profile) -> dict[str, float]:
    """Seconds of own time per category on the event loop thread (the model runs in a
    worker thread, which cProfile does not see)."""
    loaded: Any = pstats.Stats(profiler)
    stats = loaded.stats  # (file, line, fn) → (cc, nc, tottime, cumtime, callers)
    shares: dict[str, float] = {}
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in stats.items():
        # a C function has no file: its name says whose it is (pydantic_core, epoll, …)
        where = function if filename == "~" else filename
        category = next((name for needle, name in CATEGORIES if needle in where),
                        f"other: {where[:40]}" if tottime > 0.2 else "other")
        shares[category] = shares.get(category, 0.0) + tottime
    return dict(sorted(shares.items(), key=lambda kv: -kv[1]))
