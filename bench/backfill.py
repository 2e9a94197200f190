"""Backfill: replay a gzip archive into Kafka at full speed, estimate it, and kill it
halfway then resume.

1. Generates a gzip archive of N alerts from samples/wazuh-alerts.jsonl (fresh ids).
2. Replays it in process (no rate limit, the one producer path `backfill_sink`) into the
   shared stack's broker (S3-backed Tansu) on a topic of its own, then into a private
   memory-storage broker on a free port, then again there under cProfile: alerts/s (wall),
   the replay's own CPU per alert, the broker's CPU per alert (Tansu, and SeaweedFS behind
   the shared one: read from /proc, so on the shared stack it counts everyone's traffic
   during the run), the load average before and after, the top functions.
3. Times `--estimate` (normalize + fingerprint of every line) in process.
4. Runs `secanalyst backfill` as a subprocess on the private broker, SIGTERMs it when
   about half is checkpointed, runs it again, then counts messages and distinct alert ids
   on the topic: exactly one message per alert id.
5. Same with SIGKILL (no chance to checkpoint the chunks in flight): reports how many
   duplicates the resume produced (at most the chunks in flight; the verdicts table keeps
   them idempotent end to end).
6. With --append: the section goes to docs/benchmarks.md and `backfill.alerts_per_s` (the
   shared broker's figure) to docs/benchmarks.json.

Run: .venv/bin/python -m bench.backfill [--alerts 100000] [--append]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import pstats
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from bench.common import ROOT, machine, stamp, varied_alerts
from bench.record import record
from pipeline.config import KafkaSettings, Settings, Topics
from pipeline.devstack.kafka import TansuBroker
from pipeline.devstack.stack import embedded_broker
from pipeline.kafka.admin import ensure_topics
from pipeline.sources.backfill.checkpoint import CheckpointStore
from pipeline.sources.backfill.command import backfill_sink, estimate_files, write_gzip_lines
from pipeline.sources.backfill.estimate import Estimate
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


SHARED_BROKER = "127.0.0.1:19092"  # the dev stack's (S3-backed Tansu), on a topic of our own
GOAL = "≥ 20,000 alerts/s into Kafka from a gzip archive"


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes (all their threads) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def shared_broker_pids() -> list[int]:
    """Tansu and (when S3-backed) SeaweedFS of the shared dev stack."""
    pids = [service.files.recorded_pid() for service in embedded_broker(Settings())
            if hasattr(service, "files")]
    return [pid for pid in pids if pid is not None]


@dataclass
class Replay:
    alerts: int
    wall_s: float
    cpu_s: float  # this process only: what the replay costs, whatever the machine's load
    profile: str = ""
    broker_cpu_s: float = 0.0  # the broker's processes during the replay

    @property
    def broker_us_per_alert(self) -> float:
        return self.broker_cpu_s / self.alerts * 1e6

    @property
    def rate(self) -> float:
        return self.alerts / self.wall_s

    @property
    def cpu_us_per_alert(self) -> float:
        return self.cpu_s / self.alerts * 1e6


async def replay_in_process(settings: Settings, archive: Path, state: Path, *,
                            profile: bool = False, broker_pids: list[int] | None = None,
                            ) -> Replay:
    """The replay as `secanalyst backfill` runs it (no rate limit), through the one
    producer path (`backfill_sink`: acks=all), into settings' backfill topic."""
    await ensure_topics(settings)
    async with backfill_sink(settings) as sink:
        job = Backfill(sink, CheckpointStore(state / f"rate-{time.time_ns()}"),
                       tenant_id="bench", alert_filter=AlertFilter(), bucket=TokenBucket(0),
                       chunk_size=settings.ingest.backfill_chunk,
                       max_in_flight=settings.ingest.backfill_in_flight)
        profiler = cProfile.Profile() if profile else None
        broker = cpu_seconds(broker_pids or [])
        cpu, started = time.process_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        report = await job.run([archive])
        if profiler is not None:
            profiler.disable()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        broker = cpu_seconds(broker_pids or []) - broker
    return Replay(report.total("published"), wall, cpu, top_functions(profiler), broker)


def top_functions(profiler: cProfile.Profile | None, count: int = 14) -> str:
    if profiler is None:
        return ""
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(count)
    text = out.getvalue()
    return text[text.index("ncalls"):].rstrip()


def bench_settings(state: Path, bootstrap: str, topic: str) -> Settings:
    return Settings(state_dir=state, kafka=KafkaSettings(
        bootstrap_servers=bootstrap, topics=Topics(backfill=topic)))


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


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f}"


def replay_row(where: str, replay: Replay, loads: tuple[str, str]) -> str:
    return (f"| {where} | **{replay.rate:,.0f} alerts/s** ({replay.alerts:,} in "
            f"{replay.wall_s:.1f} s) | {replay.cpu_us_per_alert:.0f} µs "
            f"(= {1e6 / replay.cpu_us_per_alert:,.0f} alerts per CPU-second) | "
            f"{replay.broker_us_per_alert:.0f} µs | {loads[0]} → {loads[1]} |")


def timed_replay(settings: Settings, archive: Path, state: Path, profile: bool = False,
                 broker_pids: list[int] | None = None) -> tuple[Replay, tuple[str, str]]:
    before = load()
    replay = asyncio.run(replay_in_process(settings, archive, state, profile=profile,
                                           broker_pids=broker_pids))
    return replay, (before, load())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--append", action="store_true",
                        help="append the section to docs/benchmarks.md and record the figure")
    args = parser.parse_args()
    n = args.alerts
    command = f".venv/bin/python -m bench.backfill --alerts {n} --append"
    lines = ["## Backfill replay at 20k/s and kill/resume (issue #15) — `bench/backfill.py`",
             "", f"Run: `{command}` (the shared stack's broker on a topic of its own, and "
             "a private memory-storage Tansu broker on a free port)", ""]
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        state = Path(tmp)
        archive = state / "alerts-archive.json.gz"
        write_gzip_lines(archive, varied_alerts(n))
        suffix = time.strftime("%Y%m%d%H%M%S")
        shared = timed_replay(bench_settings(state, SHARED_BROKER,
                                             f"bench.backfill.{suffix}"), archive, state,
                              broker_pids=shared_broker_pids())
        broker = TansuBroker(state, free_port())
        broker.start()
        try:
            settings = bench_settings(state, broker.address(), "alerts.backfill")
            private_pid = broker.files.recorded_pid()
            memory = timed_replay(settings, archive, state,
                                  broker_pids=[private_pid] if private_pid else [])
            profiled = timed_replay(bench_settings(state, broker.address(), "profiled"),
                                    archive, state, profile=True,
                                    broker_pids=[private_pid] if private_pid else [])
            started = time.perf_counter()
            estimate = estimate_files(settings, [archive], AlertFilter(), "bench",
                                      use_database=False)
            estimate_s = time.perf_counter() - started
            results = {}
            for name, kill in (("sigterm", signal.SIGTERM), ("sigkill", signal.SIGKILL)):
                topic = f"alerts.backfill.{name}"
                asyncio.run(ensure_topics(bench_settings(state, broker.address(), topic)))
                seconds, halfway = cli_kill_and_resume(broker.address(), state, archive,
                                                       topic, name, kill, n // 2)
                ids = asyncio.run(topic_ids(settings, topic))
                results[name] = (halfway, len(ids), len(set(ids)), seconds)
        finally:
            broker.stop()
    lines += report(n, settings, shared, memory, profiled, estimate, estimate_s, results)
    print("\n".join(lines))
    if args.append:
        with open(ROOT / "docs" / "benchmarks.md", "a") as doc:
            doc.write("\n" + "\n".join(lines) + "\n")
        record("backfill.alerts_per_s", round(shared[0].rate), goal=GOAL, command=command)


def report(n: int, settings: Settings, shared: tuple[Replay, tuple[str, str]],
           memory: tuple[Replay, tuple[str, str]], profiled: tuple[Replay, tuple[str, str]],
           estimate: Estimate, estimate_s: float,
           results: dict[str, tuple[int, int, int, float]]) -> list[str]:
    ingest = settings.ingest
    rate, cpu = shared[0].rate, shared[0].cpu_us_per_alert
    verdict = "goal met" if rate >= 20_000 else "goal not met"
    lines = [f"{stamp()} — {machine()}; the load average before and after each run is "
             "beside its figure (the embedded stack's idle services run beside it).", "",
             f"A {n:,}-alert gzip archive from `samples/wazuh-alerts.jsonl` (fresh ids, "
             "varied addresses and users). Replay in process as `secanalyst backfill` runs "
             f"it: no rate limit, acks=all, chunks of {ingest.backfill_chunk} "
             f"(`ingest.backfill_chunk`), each to one partition, up to "
             f"{ingest.backfill_in_flight} in flight (`ingest.backfill_in_flight`), record "
             f"batches of {ingest.backfill_batch_bytes:,} bytes (`ingest.backfill_batch_bytes`)"
             f" compressed with {ingest.backfill_compression} "
             "(`ingest.backfill_compression`). Broker CPU: Tansu (+ SeaweedFS for the shared "
             "one, whose figure also counts the other engineers' traffic meanwhile).", "",
             "| broker | replay into Kafka (wall) | CPU of the replay per alert "
             "| broker CPU per alert | uptime before → after |",
             "| --- | ---: | ---: | ---: | --- |",
             replay_row("shared stack (S3-backed Tansu, 127.0.0.1:19092), own topic",
                        *shared),
             replay_row("private Tansu, memory storage", *memory),
             replay_row("private Tansu, memory storage, under cProfile", *profiled), "",
             f"**{verdict}** on the shared broker: {rate:,.0f} alerts/s = "
             f"{rate / 20_000:.2f} × the goal. The replay's own CPU is {cpu:.0f} µs per "
             f"alert, i.e. {1e6 / cpu:,.0f} alerts/s if it had one core to itself; the wall "
             "figure is what the loaded machine gave it (memory broker / shared broker = "
             f"{memory[0].rate / rate:.2f}).", "",
             "Where the replay's time goes (cProfile, memory broker, by own time):", "",
             "```", profiled[0].profile, "```", "",
             f"`--estimate` (normalize + fingerprint every line, no DB): "
             f"{estimate.alerts:,} alerts, {estimate.distinct_fingerprints:,} distinct "
             f"fingerprints; {estimate_s:.1f} s.", "",
             "Kill halfway, run again (`secanalyst backfill` subprocesses on the private "
             "broker; the kill comes when the checkpoints reach half), then every message on "
             "the topic is read back:", "",
             "| kill | checkpointed when killed | messages on topic | distinct alert ids | "
             "duplicates | wall s (both runs) |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, (halfway, total, distinct, seconds) in results.items():
        lines.append(f"| {name.upper()} | {halfway:,} | {total:,} | {distinct:,} | "
                     f"{total - distinct:,} | {seconds:.1f} |")
    return lines


if __name__ == "__main__":
    main()
