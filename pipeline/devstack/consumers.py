"""`secanalyst run` (all four stages) as a managed process of the dev stack:
`secanalyst dev up --consumers` starts it after the services and waits until its consumers
joined their groups; `dev down` stops it first (SIGTERM: it finishes its batches and
commits); `dev status` shows it. Without this, nothing consumes after `make demo` (the
demo's consumers stop with it) and alerts sent by a Wazuh hook wait in `alerts.raw`.

Readiness is the worker's own `/readyz` (pipeline/worker_health.py), on a free port chosen
at start and kept beside the pid file."""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.devstack.processes import (
    ServiceFiles,
    pid_alive,
    start_detached,
    stop_recorded,
    wait_until,
)

# The first start loads the embedding model and the tokenizer: tens of seconds on 2 cores.
READY_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ManagedConsumers:
    name = "consumers"

    def __init__(self, state_dir: Path, *, cwd: Path | None = None) -> None:
        self.files = ServiceFiles(self.name, state_dir)
        self.cwd = cwd  # where `secanalyst run` reads ./secanalyst.toml; None: ours

    @property
    def _port_file(self) -> Path:
        return self.files.pid_file.with_suffix(".health")

    def started(self) -> bool:
        """`dev up --consumers` started it (it may have died since)."""
        return self.files.recorded_pid() is not None

    def running(self) -> bool:
        pid = self.files.recorded_pid()
        return pid is not None and pid_alive(pid)

    def health_port(self) -> int | None:
        try:
            return int(self._port_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def ready(self) -> bool:
        port = self.health_port()
        if port is None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1.0) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False  # 503 (joining) or not listening yet

    def start(self, *, timeout_s: float = READY_TIMEOUT_S) -> None:
        if self.running():
            return
        port = free_port()
        pid = start_detached(self.files, [sys.executable, "-m", "pipeline.cli.app", "run"],
                             env={"SECANALYST_WORKER__HEALTH_PORT": str(port)}, cwd=self.cwd)
        self._port_file.write_text(f"{port}\n")
        wait_until(self.ready, timeout_s=timeout_s, interval_s=1.0,
                   what=f"secanalyst run (log: {self.files.log_file})",
                   alive=lambda: pid_alive(pid))

    def stop(self) -> bool:
        stopped = stop_recorded(self.files, timeout_s=60.0)  # lets the batches finish
        self._port_file.unlink(missing_ok=True)
        return stopped

    def address(self) -> str:
        port = self.health_port()
        health = f", /readyz on 127.0.0.1:{port}" if port else ""
        return f"pid {self.files.recorded_pid()}{health}, log {self.files.log_file}"
