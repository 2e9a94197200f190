"""A real Prometheus server for tests: Debian's `prometheus` binary, run by the test itself
(never the system service apt may install) in a temporary directory on a free loopback
port, scraping the given static targets every second; PromQL through its HTTP API."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml

from tests.servers import free_port, stop, wait_http


@dataclass(frozen=True)
class ScrapeJob:
    name: str
    targets: Sequence[str]  # host:port
    labels: Mapping[str, str] = field(default_factory=dict)  # added to every series


@dataclass(frozen=True)
class Prometheus:
    url: str

    def query(self, promql: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: each sample's labels and value (NaN stays NaN)."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise AssertionError(f"PromQL {promql!r} failed: {body}")
        return [(sample["metric"], float(sample["value"][1]))
                for sample in body["data"]["result"]]

    def scalar(self, promql: str) -> float | None:
        """The one value of a query answering one sample; None when it answers none (or
        NaN, as histogram_quantile over no observations does)."""
        samples = self.query(promql)
        if not samples:
            return None
        if len(samples) > 1:
            raise AssertionError(f"PromQL {promql!r} answered {len(samples)} samples")
        value = samples[0][1]
        return None if math.isnan(value) else value

    def targets_up(self, job: str) -> int:
        return sum(int(value) for _, value in self.query(f'up{{job="{job}"}}'))


def required_tool(command: str, package: str) -> str:
    """The path of `command`; without it the test skips, saying what to install — except
    in CI (or with SECANALYST_REQUIRE_K8S_TOOLS), where scripts/install-test-deps.sh has
    installed it and its absence is a failure."""
    binary = shutil.which(command)
    if binary is None:
        message = (f"{command} is not installed (apt-get install -y {package}; "
                   "scripts/install-test-deps.sh installs it)")
        if os.environ.get("SECANALYST_REQUIRE_K8S_TOOLS") or os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return binary


def scrape_config(jobs: Sequence[ScrapeJob], interval: str) -> dict[str, object]:
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {"job_name": job.name, "metrics_path": "/metrics",
                 "static_configs": [{"targets": list(job.targets), "labels": dict(job.labels)}]}
                for job in jobs]}


@contextmanager
def prometheus_server(jobs: Sequence[ScrapeJob], *, interval: str = "1s") -> Iterator[Prometheus]:
    binary = required_tool("prometheus", "prometheus")
    workdir = Path(tempfile.mkdtemp(prefix="secanalyst-prometheus-"))
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(scrape_config(jobs, interval)))
    port = free_port()
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"],
            cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/-/ready", process, timeout_s=30)
        yield Prometheus(f"http://127.0.0.1:{port}")
    finally:
        stop(process)
        shutil.rmtree(workdir, ignore_errors=True)
