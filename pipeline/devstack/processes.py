"""Detached service processes with a pid file and a log file under the state directory.

`down` stops exactly what `up` started: it only signals pids it recorded, and only when
the process still has the command line it was started with.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServiceFiles:
    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    def recorded_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        state = Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1]
    except OSError:
        return True
    return state != "Z"


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def start_detached(files: ServiceFiles, argv: Sequence[str], *,
                   env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
    files.pid_file.parent.mkdir(parents=True, exist_ok=True)
    files.log_file.parent.mkdir(parents=True, exist_ok=True)
    with files.log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    files.pid_file.write_text(f"{proc.pid}\n")
    return proc.pid


def stop_recorded(files: ServiceFiles, *, timeout_s: float = 20.0) -> bool:
    """SIGTERM the recorded process group, then SIGKILL after the timeout."""
    pid = files.recorded_pid()
    if pid is None:
        return False
    if pid_alive(pid):
        for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if not pid_alive(pid):
                break
    files.pid_file.unlink(missing_ok=True)
    return True


def wait_until(check: object, *, timeout_s: float, what: str, interval_s: float = 0.25,
               alive: object = None) -> None:
    """Poll `check()` until true; fail early if `alive()` turns false."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        if alive is not None and not alive():  # type: ignore[operator]
            raise RuntimeError(f"{what} exited during start-up; see its log")
        time.sleep(interval_s)
    raise TimeoutError(f"{what} was not ready after {timeout_s:.0f}s; see its log")
