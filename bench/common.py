"""Shared pieces of the benchmarks: isolated topics, generated alerts, machine facts."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import random
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.config import KafkaSettings, Settings, Topics

ROOT = Path(__file__).parents[1]
SAMPLES = ROOT / "samples" / "wazuh-alerts.jsonl"


def isolated_settings(run_id: str) -> Settings:
    """Settings whose topics and consumer groups belong to this run alone."""
    topics = Topics.model_validate({k: f"{run_id}.{v}" for k, v in Topics().model_dump().items()
                                    if isinstance(v, str)})
    return Settings(kafka=KafkaSettings(group_prefix=f"bench-{run_id}", topics=topics))


def new_run_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def sample_documents() -> list[dict[str, Any]]:
    return [json.loads(line) for line in SAMPLES.read_text().splitlines() if line.strip()]


def varied_alerts(count: int, seed: int = 7) -> list[bytes]:
    """`count` distinct alerts made from the samples: fresh ids, source addresses and
    users, so that every one has its own text to embed (no cache hits)."""
    rng = random.Random(seed)
    documents = sample_documents()
    out = []
    for n in range(count):
        doc = json.loads(json.dumps(documents[n % len(documents)]))
        ip = f"198.51.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        user = f"user{rng.randrange(100_000)}"
        doc["id"] = f"{1_800_000_000 + n}.{rng.randrange(10**8)}"
        doc.setdefault("data", {})["srcip"] = ip
        doc["full_log"] = f"{doc.get('full_log', '')} src={ip} user={user} seq={n}"
        out.append(json.dumps(doc).encode())
    return out


def machine() -> str:
    cpus = os.cpu_count()
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    python = platform.python_version()
    return (f"{platform.machine()}, {cpus} cores ({cpu_model()}), {mem_gib:.0f} GiB, "
            f"Python {python}")


def cpu_model() -> str:
    """The CPU's model name and its widest vector instructions (/proc/cpuinfo): hosts of
    one machine kind differ (an AVX-512 host ran the embedding model 3× faster than an
    AVX2 one), and a figure is only comparable on the same kind of CPU."""
    from pipeline.analysis.embedding_backends import cpu_flags

    try:
        with open("/proc/cpuinfo") as info:
            name = next((" ".join(line.partition(":")[2].split()) for line in info
                         if line.startswith("model name")), "")
    except OSError:
        name = ""
    flags = cpu_flags()
    vector = ("AMX" if "amx_tile" in flags else "AVX-512" if "avx512f" in flags
              else "AVX2" if "avx2" in flags else "no AVX2")
    return f"{name or 'CPU unknown'}, {vector}"


def cpu_speed_ms(repeat: int = 5) -> float:
    """A fixed piece of pure-Python work (hashing and dict updates, ~50 ms on this kind of
    machine), best of `repeat`, ms: lower is faster. Printed beside CPU figures so that
    runs on a slower or busier host (a virtual machine's neighbours) can be told apart
    from a change in the code."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        table: dict[int, int] = {}
        for i in range(200_000):
            table[hash((i, i >> 3)) & 1023] = i
        best = min(best, time.perf_counter() - started)
    return best * 1000


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


async def count_topic(settings: Settings, topic: str, until: int, timeout_s: float) -> float:
    """Seconds until `topic` holds `until` messages (read from the start, no group)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    loop = asyncio.get_running_loop()
    started, seen = loop.time(), 0
    try:
        while seen < until and loop.time() - started < timeout_s:
            batches = await consumer.getmany(timeout_ms=200)
            seen += sum(len(records) for records in batches.values())
    finally:
        await consumer.stop()
    if seen < until:
        raise TimeoutError(f"{topic}: {seen}/{until} messages after {timeout_s}s")
    return loop.time() - started


STORM_TEMPLATE: dict[str, Any] = {
    "rule": {"level": 10, "id": "5712", "description":
             "sshd: brute force trying to get access to the system. Non existent user.",
             "mitre": {"id": ["T1110"], "tactic": ["Credential Access"],
                       "technique": ["Brute Force"]},
             "groups": ["syslog", "sshd", "authentication_failures"], "frequency": 8},
    "agent": {"id": "007", "name": "edge-gw-01.example.com", "ip": "10.0.9.7"},
    "manager": {"name": "wazuh-manager.example.com"},
    "decoder": {"parent": "sshd", "name": "sshd"},
    "location": "/var/log/auth.log",
}


def storm_alerts(count: int, *, source_ip: str = "203.0.113.66", seed: int = 3,
                 level: int = 10) -> list[bytes]:
    """One brute-force storm: the same rule, host and source; fresh ids, timestamps,
    ports, user names and counters on every alert."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        doc = json.loads(json.dumps(STORM_TEMPLATE))
        doc["rule"]["level"] = level
        doc["rule"]["firedtimes"] = n + 1
        port = rng.randrange(30000, 65000)
        user = rng.choice(["admin", "oracle", "test", "ubuntu", "pi", "postgres", "git"])
        second = n % 60
        doc["timestamp"] = f"2026-11-27T10:{(n // 60) % 60:02d}:{second:02d}.{n % 1000:03d}+0000"
        doc["id"] = f"{1_795_000_000 + n}.{rng.randrange(10**8)}"
        doc["full_log"] = (f"Nov 27 10:{(n // 60) % 60:02d}:{second:02d} edge-gw-01 "
                           f"sshd[{4000 + n}]: Invalid user {user} from {source_ip} "
                           f"port {port}")
        doc["data"] = {"srcip": source_ip, "srcport": str(port), "srcuser": user}
        out.append(json.dumps(doc).encode())
    return out
