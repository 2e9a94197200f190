"""Detached service processes with a pid file and a log file under the state directory.

Each service runs in its own session (process group = its pid) and carries a random mark
in its environment, which its children inherit. `down` stops exactly what `up` started,
children included, even when the leader was killed first (vLLM's engine and worker
processes outlive a `kill -9` of its API server): every process of the recorded group and
every process that carries the mark, SIGTERM first, SIGKILL after a timeout. A group is
only signalled when one of its members carries the mark, so a reused pid is never hit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Environment variable that marks every process of one started service (and its children).
MARK_ENV = "SECANALYST_DEVSTACK_MARK"


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
        return self.recorded().pid

    def recorded(self) -> Recorded:
        """The pid file's "<pid> <pgid> <mark>" (older files hold only the pid)."""
        try:
            fields = self.pid_file.read_text().split()
            pid = int(fields[0])
            pgid = int(fields[1]) if len(fields) > 1 else pid
        except (FileNotFoundError, ValueError, IndexError):
            return Recorded(None, None, None)
        return Recorded(pid, pgid, fields[2] if len(fields) > 2 else None)


class RecordedService:
    """A service this module starts detached (`launch`), its pid recorded under the state
    directory: running while that process lives and `ready()` says so; `stop` ends it
    and its children. Subclasses set `name` and say what ready means."""

    name: str
    stop_timeout_s = 20.0

    def __init__(self, state_dir: Path) -> None:
        self.files = ServiceFiles(self.name, state_dir)

    def ready(self) -> bool:
        raise NotImplementedError

    def running(self) -> bool:
        pid = self.files.recorded_pid()
        return pid is not None and pid_alive(pid) and self.ready()

    def stop(self) -> bool:
        return stop_recorded(self.files, timeout_s=self.stop_timeout_s)


@dataclass(frozen=True)
class Recorded:
    pid: int | None
    pgid: int | None
    mark: str | None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive — but a process whose leader thread is a zombie while its other
    # threads still run is (a killed multi-threaded server: until its last thread has
    # exited its sockets are open, and a restart finds its port taken). Every thread's state.
    states = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                states.append((task / "stat").read_text().rsplit(") ", 1)[-1][:1])
    if not states:
        return True  # /proc unreadable: signal 0 said it exists
    return any(state not in ("Z", "X") for state in states)


def _process_group(pid: int) -> int | None:
    try:  # field 5 of /proc/<pid>/stat, after the ")" that ends the command name
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def _has_mark(pid: int, mark: str) -> bool:
    try:
        return f"{MARK_ENV}={mark}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def service_processes(recorded: Recorded) -> set[int]:
    """The live processes of a started service: its group's members (when the group is
    ours: one of them carries the mark) and every process with its mark."""
    if recorded.pid is None:
        return set()
    group: set[int] = set()
    marked: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        if _process_group(pid) == recorded.pgid:
            group.add(pid)
        if recorded.mark is not None and _has_mark(pid, recorded.mark):
            marked.add(pid)
    if recorded.mark is not None and not group & marked:
        group = set()  # the group id was reused by someone else's processes
    return {pid for pid in group | marked if pid_alive(pid)}


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def start_detached(files: ServiceFiles, argv: Sequence[str], *,
                   env: Mapping[str, str] | None = None, cwd: Path | None = None) -> int:
    # Leftovers of an earlier start (e.g. children of a killed leader) hold memory and
    # maybe the port: stop them before starting again.
    stop_recorded(files, timeout_s=10.0)
    files.pid_file.parent.mkdir(parents=True, exist_ok=True)
    files.log_file.parent.mkdir(parents=True, exist_ok=True)
    mark = uuid.uuid4().hex
    with files.log_file.open("ab") as log:
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {}), MARK_ENV: mark}, cwd=cwd,
            start_new_session=True)  # its own process group: pgid = pid
    files.pid_file.write_text(f"{proc.pid} {proc.pid} {mark}\n")
    return proc.pid


def stop_recorded(files: ServiceFiles, *, timeout_s: float = 20.0) -> bool:
    """Stop every process of the recorded service (SIGTERM, then SIGKILL after the
    timeout); False when nothing was recorded."""
    recorded = files.recorded()
    if recorded.pid is None:
        return False
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 5.0)):
        survivors = service_processes(recorded)
        if not survivors:
            break
        _signal_all(recorded, survivors, sig)
        deadline = time.monotonic() + wait
        while survivors and time.monotonic() < deadline:
            time.sleep(0.1)
            survivors = {pid for pid in survivors if pid_alive(pid)}
    files.pid_file.unlink(missing_ok=True)
    return True


def _signal_all(recorded: Recorded, pids: set[int], sig: signal.Signals) -> None:
    if recorded.pgid is not None and any(_process_group(p) == recorded.pgid for p in pids):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(recorded.pgid, sig)
    for pid in pids:  # members that left the group (their own session) too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def wait_until(check: Callable[[], bool], *, timeout_s: float, what: str,
               interval_s: float = 0.25, alive: Callable[[], bool] | None = None) -> None:
    """Poll `check()` until true; fail early if `alive()` turns false."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if alive is not None and not alive():
            raise RuntimeError(f"{what} exited during start-up; see its log")
        time.sleep(interval_s)
    raise TimeoutError(f"{what} was not ready after {timeout_s:.0f}s; see its log")


class PortTaken(RuntimeError):
    """A port the embedded stack needs is held by another program (the CLI prints it as
    one line, with the hint, not as a traceback)."""

    def __init__(self, ports: Sequence[int], hint: str) -> None:
        self.ports = list(ports)
        self.hint = hint
        listed = ", ".join(str(port) for port in self.ports)
        super().__init__(f"port {listed} is taken by another program; {hint}")


def refuse_taken_ports(ports: Sequence[int], *, hint: str) -> None:
    """A port another program holds would make the start fail obscurely (or, worse, make
    the service look up when it is someone else answering): say so, with how to move."""
    taken = [port for port in ports if port_open(port)]
    if taken:
        raise PortTaken(taken, hint)


def launch(files: ServiceFiles, argv: Sequence[str], *, ready: Callable[[], bool],
           timeout_s: float, what: str, env: Mapping[str, str] | None = None,
           interval_s: float = 0.25) -> int:
    """Start a service detached (pid recorded) and wait until `ready()`. A start that
    fails (the process exits, or is not ready in time) raises RuntimeError naming how
    the process ended and the last lines it wrote to its log."""
    since = log_size(files)
    pid = start_detached(files, argv, env=env)
    try:
        wait_until(ready, timeout_s=timeout_s, what=what, interval_s=interval_s,
                   alive=lambda: pid_alive(pid))
    except (RuntimeError, TimeoutError) as exc:
        raise RuntimeError(f"{exc}: {start_failure(files, pid, since)}") from exc
    return pid


def log_size(files: ServiceFiles) -> int:
    """Where the service's log ends now: what a start writes comes after."""
    try:
        return files.log_file.stat().st_size
    except FileNotFoundError:
        return 0


def start_failure(files: ServiceFiles, pid: int, since: int, *, lines: int = 15) -> str:
    """Why a start failed, as far as can be seen: how the process ended (a child of this
    process can be asked) and the last lines it wrote to its log since `since`."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
        ended = ("still running" if done == 0
                 else f"exit code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status)
                 else f"killed by signal {os.WTERMSIG(status)}")
    except ChildProcessError:
        ended = "running" if pid_alive(pid) else "ended (not a child of this process)"
    try:
        with files.log_file.open("rb") as log:
            log.seek(since)
            tail = log.read().decode(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        tail = []
    return f"pid {pid} {ended}; its output: " + (" | ".join(tail) or "(none)")
