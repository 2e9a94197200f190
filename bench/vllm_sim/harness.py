"""Helpers of the routing benchmarks: simulator processes, percentiles, the results file."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from bench.common import machine, stamp
from pipeline.router.engine_stats import EngineStats, metrics_url

ROOT = Path(__file__).parents[2]
RESULTS = ROOT / "docs" / "benchmarks.md"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SimProcess:
    """`replicas` simulated replicas in one child process, on consecutive free ports."""

    def __init__(self, replicas: int, *flags: str) -> None:
        while True:
            base = free_port()
            if all(_port_free(base + i) for i in range(replicas)):
                break
        self.urls = [f"http://127.0.0.1:{base + i}/v1" for i in range(replicas)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.vllm_sim", "--port", str(base),
             "--replicas", str(replicas), *flags],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def ready(self) -> None:
        async with httpx.AsyncClient(timeout=1.0) as client:
            for _ in range(200):
                try:
                    responses = [await client.get(u.removesuffix("/v1") + "/health")
                                 for u in self.urls]
                    if all(r.is_success for r in responses):
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("the simulator did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


async def scrape(urls: list[str]) -> dict[str, EngineStats]:
    async with httpx.AsyncClient(timeout=5.0) as client:
        return {u: EngineStats.from_vllm_scrape((await client.get(metrics_url(u))).text)
                for u in urls}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def record(title: str, command: str, body: str) -> None:
    """Append a section (title, command, machine + date, body) to docs/benchmarks.md."""
    section = (f"\n## {title}\n\nRun: `{command}`\n\n{stamp()} — {machine()}.\n\n"
               f"{body.strip()}\n")
    with RESULTS.open("a") as out:
        out.write(section)
