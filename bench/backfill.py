"""Backfill: estimate and replay a 100,000-alert gzip archive into Kafka, and kill it
halfway then resume.

1. Generates a gzip archive of N alerts from samples/wazuh-alerts.jsonl (fresh ids).
2. Starts its own Tansu broker on a free port (never the dev stack's).
3. Times `--estimate` (normalize + fingerprint of every line) in process.
4. Replays the archive in process (no rate limit) and reports alerts/s into Kafka.
5. Runs `secanalyst backfill` as a subprocess, SIGTERMs it when about half is
   checkpointed, runs it again, then counts messages and distinct alert ids on the topic:
   exactly one message per alert id.
6. Same with SIGKILL (no chance to checkpoint the chunk in flight): reports how many
   duplicates the resume produced (at most one chunk; the verdicts table keeps them
   idempotent end to end).

Run: .venv/bin/python -m bench.backfill [--alerts 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import ROOT, machine, stamp, varied_alerts
from pipeline.config import KafkaSettings, Settings, Topics
from pipeline.devstack.kafka import TansuBroker
from pipeline.kafka.admin import ensure_topics
from pipeline.kafka.producer import KafkaAlertSink
from pipeline.sources.backfill.checkpoint import CheckpointStore
from pipeline.sources.backfill.command import estimate_files, write_gzip_lines
from pipeline.sources.backfill.filters import AlertFilter
from pipeline.sources.backfill.ratelimit import TokenBucket
from pipeline.sources.backfill.runner import Backfill


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def topic_ids(settings: Settings, topic: str, quiet_s: float = 3.0) -> list[str]:
    """Alert ids of every message on the topic (read until quiet for `quiet_s`)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest",
                                max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    ids: list[str] = []
    try:
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            batches = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batches.values():
                for record in records:
                    ids.append(json.loads(record.value)["id"])
                last = time.monotonic()
    finally:
        await consumer.stop()
    return ids


async def replay_in_process(settings: Settings, archive: Path, state: Path) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                linger_ms=20, max_batch_size=262_144)
    await producer.start()
    try:
        job = Backfill(KafkaAlertSink(producer, settings.kafka.topics.backfill,
                                      priority="batch"),
                       CheckpointStore(state / "rate"), tenant_id="bench",
                       alert_filter=AlertFilter(), bucket=TokenBucket(0),
                       chunk_size=settings.ingest.backfill_chunk)
        started = time.perf_counter()
        report = await job.run([archive])
        elapsed = time.perf_counter() - started
    finally:
        await producer.stop()
    return report.total("published") / elapsed


def published_so_far(state: Path, job: str) -> int:
    total = 0
    for path in (state / "backfill" / job).glob("*.json"):
        with contextlib.suppress(ValueError, KeyError):  # being replaced
            total += int(json.loads(path.read_text())["checkpoint"]["published"])
    return total


def cli_kill_and_resume(broker: str, state: Path, archive: Path, topic: str, job: str,
                        kill: signal.Signals, at: int) -> tuple[float, int]:
    env = {**os.environ, "SECANALYST_KAFKA__BOOTSTRAP_SERVERS": broker,
           "SECANALYST_STATE_DIR": str(state), "SECANALYST_KAFKA__TOPICS__BACKFILL": topic,
           "SECANALYST_LOG_FORMAT": "json"}
    command = [str(ROOT / ".venv/bin/secanalyst"), "backfill", str(archive), "--tenant",
               "bench", "--rate", "0", "--no-skip-existing", "--job", job]
    started = time.perf_counter()
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    while first.poll() is None and published_so_far(state, job) < at:
        time.sleep(0.05)
    first.send_signal(kill)
    first.wait(60)
    halfway = published_so_far(state, job)
    second = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True)
    assert second.returncode == 0
    return time.perf_counter() - started, halfway


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=100_000)
    args = parser.parse_args()
    n = args.alerts
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        state = Path(tmp)
        archive = state / "alerts-archive.json.gz"
        write_gzip_lines(archive, varied_alerts(n))
        broker = TansuBroker(state, free_port())
        broker.start()
        try:
            topics = Topics(backfill="alerts.backfill")
            settings = Settings(state_dir=state, kafka=KafkaSettings(
                bootstrap_servers=broker.address(), topics=topics))
            asyncio.run(ensure_topics(settings))

            started = time.perf_counter()
            estimate = estimate_files(settings, [archive], AlertFilter(), "bench",
                                      use_database=False)
            estimate_s = time.perf_counter() - started

            rate = asyncio.run(replay_in_process(settings, archive, state))

            results = {}
            for name, kill in (("sigterm", signal.SIGTERM), ("sigkill", signal.SIGKILL)):
                topic = f"alerts.backfill.{name}"
                asyncio.run(ensure_topics(Settings(kafka=KafkaSettings(
                    bootstrap_servers=broker.address(), topics=Topics(backfill=topic)))))
                seconds, halfway = cli_kill_and_resume(broker.address(), state, archive,
                                                       topic, name, kill, n // 2)
                ids = asyncio.run(topic_ids(settings, topic))
                results[name] = (halfway, len(ids), len(set(ids)), seconds)
        finally:
            broker.stop()
    print(f"{stamp()} — {machine()}")
    print(f"archive: {n:,} alerts, gzip, {archive.name}")
    print(f"estimate: {estimate.alerts:,} alerts, {estimate.distinct_fingerprints:,} "
          f"distinct fingerprints, {estimate.input_tokens:,} in / "
          f"{estimate.output_tokens:,} out tokens, cost {estimate.cost:.2f} "
          f"({estimate.tokens_source}); took {estimate_s:.1f} s")
    print(f"replay into Kafka (in process, no rate limit, acks=all, chunk 500): "
          f"{rate:,.0f} alerts/s")
    print("| kill | checkpointed when killed | messages on topic | distinct ids | "
          "duplicates | wall s (both runs) |")
    for name, (halfway, total, distinct, seconds) in results.items():
        print(f"| {name} | {halfway:,} | {total:,} | {distinct:,} | {total - distinct:,} "
              f"| {seconds:.1f} |")


if __name__ == "__main__":
    main()
