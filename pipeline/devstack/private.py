"""Private instances of the embedded services for tests and benches: free ports, and a
hard stop. They run beside the shared stack and never touch it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time

from pipeline.devstack.processes import ServiceFiles, pid_alive


def free_port_run(count: int, *, start: int = 21000) -> int:
    """The first of `count` consecutive ports that can all be bound on 127.0.0.1 now."""
    for first in range(start, 60000, count + 7):
        socks: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports from {start}")


def kill_service(files: ServiceFiles, *, timeout_s: float = 10.0) -> None:
    """SIGKILL a service's process group at once (SeaweedFS takes ~15 s on SIGTERM; a
    private instance's data is thrown away, and a kill is the hardest stop to survive)."""
    pid = files.recorded_pid()
    if pid is None:
        return
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    files.pid_file.unlink(missing_ok=True)
