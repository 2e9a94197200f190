"""normalize → embed → retrieve as deployed — one `secanalyst run --stage` process a stage
(deploy/k8s: one stage a pod) — for bench/pipeline_throughput.py (issue 15): each stage's
CPU seconds from /proc, its batch time from its own /metrics, and the CPU of the shared
broker and database beside them."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.pipeline_profile import STAGES, StageTime
from pipeline.config import Settings
from tests.servers import free_port, stop, wait_http

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SECANALYST = Path(sys.executable).with_name("secanalyst")


@dataclass(frozen=True)
class StageProcess:
    stage: str
    proc: subprocess.Popen[bytes]
    port: int


def cpu_seconds(pid: int, thread: int | None = None, *, reaped: bool = False) -> float:
    """User + system CPU of a process (all its threads), or of one of its threads; with
    `reaped`, plus that of its children that have exited."""
    path = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    with open(path) as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after "(comm)", which may hold spaces
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def _processes() -> Iterator[tuple[int, int, str, str]]:
    """(pid, parent pid, name, command line) of every process."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(entry.path, "stat").read_text()
                cmdline = Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ")
                name, rest = stat.split("(", 1)[1].rsplit(")", 1)
                yield int(entry.name), int(rest.split()[1]), name, cmdline.decode(errors="replace")


def service_cpu(settings: Settings) -> dict[str, float]:
    """CPU seconds so far of the shared stack's broker (tansu), its storage (weed: the
    broker keeps its log in S3) and database (postgres and its backends), found by their
    ports: shared with whoever else uses the stack during the run."""
    dev = settings.dev
    totals = {"tansu": 0.0, "weed": 0.0, "postgres": 0.0}
    postmaster = None
    processes = list(_processes())
    for pid, _parent, name, cmdline in processes:
        if name.startswith("postgres") and f"-p {dev.postgres_port}" in cmdline:
            postmaster = pid
    for pid, parent, name, cmdline in processes:
        with contextlib.suppress(OSError):
            if name.startswith("tansu") and f":{dev.kafka_port} " in cmdline + " ":
                totals["tansu"] += cpu_seconds(pid)
            elif name == "weed" and f"port={dev.seaweedfs_port} " in cmdline + " ":
                totals["weed"] += cpu_seconds(pid)
            elif pid == postmaster:  # with its backends that have exited
                totals["postgres"] += cpu_seconds(pid, reaped=True)
            elif parent == postmaster:
                totals["postgres"] += cpu_seconds(pid)
    return totals


def stage_env(settings: Settings, port: int) -> dict[str, str]:
    """The environment that gives a `secanalyst run` process the bench's topics and groups."""
    env = dict(os.environ, SECANALYST_KAFKA__GROUP_PREFIX=settings.kafka.group_prefix,
               SECANALYST_WORKER__HEALTH_PORT=str(port), SECANALYST_LOG_LEVEL="WARNING")
    for name, topic in settings.kafka.topics.model_dump().items():
        if isinstance(topic, str):
            env[f"SECANALYST_KAFKA__TOPICS__{name.upper()}"] = topic
    return env


@contextlib.contextmanager
def stage_processes(settings: Settings) -> Iterator[list[StageProcess]]:
    """One worker process a stage, ready (consumers joined, model loaded) when yielded."""
    started: list[StageProcess] = []
    try:
        for stage in STAGES:
            port = free_port()
            proc = subprocess.Popen([str(SECANALYST), "run", "--stage", stage],
                                    env=stage_env(settings, port))
            started.append(StageProcess(stage, proc, port))
        for sp in started:
            wait_http(f"http://127.0.0.1:{sp.port}/readyz", sp.proc, timeout_s=600)
        yield started
    finally:
        for sp in started:
            stop(sp.proc)


def stage_cpu(processes: list[StageProcess]) -> dict[str, float]:
    return {sp.stage: cpu_seconds(sp.proc.pid) for sp in processes}


def scraped_batch_seconds(processes: list[StageProcess]) -> dict[str, StageTime]:
    """secanalyst_stage_batch_seconds of each stage process (summed over lanes)."""
    out = {stage: StageTime(0.0, 0.0) for stage in STAGES}
    for sp in processes:
        text = httpx.get(f"http://127.0.0.1:{sp.port}/metrics", timeout=10).text
        batches = seconds = 0.0
        for family in text_string_to_metric_families(text):
            if family.name != "secanalyst_stage_batch_seconds":
                continue
            for sample in family.samples:
                if sample.labels.get("stage") != sp.stage:
                    continue
                if sample.name.endswith("_count"):
                    batches += sample.value
                elif sample.name.endswith("_sum"):
                    seconds += sample.value
        out[sp.stage] = StageTime(batches, seconds)
    return out
