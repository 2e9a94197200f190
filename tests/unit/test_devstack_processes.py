"""`dev down` stops every process a service started, children included, on a private dummy
service (a Python process that spawns children) — never the shared embedded stack."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pipeline.devstack.processes import (
    MARK_ENV,
    PortTaken,
    ServiceFiles,
    launch,
    pid_alive,
    port_open,
    refuse_taken_ports,
    service_processes,
    start_detached,
    start_failure,
    stop_recorded,
)

# The leader starts a child in its group, a child in a session of its own (out of the
# group, like a daemonising helper) and a grandchild; each writes its pid to a file. With
# "stubborn", the children ignore SIGTERM (only SIGKILL stops them).
DUMMY = r"""
import os, signal, subprocess, sys, time
out, stubborn = sys.argv[1], sys.argv[2] == "stubborn"
child = ("import os, signal, sys, time\n"
         "if sys.argv[2] == 'stubborn': signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
         "open(sys.argv[1] + '/' + str(os.getpid()), 'w').close()\n"
         "if sys.argv[3] == 'spawn':\n"
         "    import subprocess; subprocess.Popen([sys.executable, '-c', sys.argv[4],"
         " sys.argv[1], sys.argv[2], 'leaf', sys.argv[4]])\n"
         "time.sleep(600)\n")
mode = sys.argv[2]
subprocess.Popen([sys.executable, "-c", child, out, mode, "spawn", child])
subprocess.Popen([sys.executable, "-c", child, out, mode, "leaf", child],
                 start_new_session=True)
open(out + "/leader", "w").close()
time.sleep(600)
"""


def _start_dummy(tmp_path: Path, mode: str = "polite") -> tuple[ServiceFiles, set[int]]:
    out = tmp_path / "pids"
    out.mkdir()
    files = ServiceFiles("dummy", tmp_path / "state")
    leader = start_detached(files, [sys.executable, "-c", DUMMY, str(out), mode])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        children = {int(p.name) for p in out.iterdir() if p.name.isdigit()}
        if len(children) == 3 and (out / "leader").exists():
            return files, {leader, *children}
        time.sleep(0.05)
    raise AssertionError(f"dummy service did not start its children: {list(out.iterdir())}")


def _wait_gone(pids: set[int], timeout_s: float = 10) -> set[int]:
    deadline = time.monotonic() + timeout_s
    alive = {p for p in pids if pid_alive(p)}
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = {p for p in alive if pid_alive(p)}
    return alive


def test_stop_takes_the_whole_service_down(tmp_path: Path) -> None:
    files, pids = _start_dummy(tmp_path)
    assert service_processes(files.recorded()) == pids
    assert stop_recorded(files, timeout_s=5)
    assert _wait_gone(pids, 1) == set()
    assert not files.pid_file.exists()


def test_stop_after_the_leader_was_killed(tmp_path: Path) -> None:
    """The vLLM case: kill -9 of the leader leaves its children running."""
    files, pids = _start_dummy(tmp_path)
    leader = files.recorded_pid()
    assert leader is not None
    os.kill(leader, signal.SIGKILL)
    assert _wait_gone({leader}) == set()
    survivors = pids - {leader}
    assert {p for p in survivors if pid_alive(p)} == survivors  # they outlived the leader
    assert stop_recorded(files, timeout_s=5)
    assert _wait_gone(survivors, 1) == set()


def test_sigkill_after_the_timeout(tmp_path: Path) -> None:
    files, pids = _start_dummy(tmp_path, "stubborn")
    started = time.monotonic()
    assert stop_recorded(files, timeout_s=1.0)
    assert _wait_gone(pids, 1) == set()
    assert time.monotonic() - started >= 1.0  # SIGTERM was tried first


def test_a_new_start_stops_leftovers_first(tmp_path: Path) -> None:
    files, pids = _start_dummy(tmp_path)
    leader = files.recorded_pid()
    assert leader is not None
    os.kill(leader, signal.SIGKILL)
    new_leader = start_detached(files, [sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        assert _wait_gone(pids, 5) == set()
        assert service_processes(files.recorded()) == {new_leader}
    finally:
        stop_recorded(files, timeout_s=5)


def test_unmarked_processes_are_never_signalled(tmp_path: Path) -> None:
    """A recorded group id that now belongs to someone else's processes is left alone."""
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                start_new_session=True)
    try:
        files = ServiceFiles("dummy", tmp_path)
        files.pid_file.parent.mkdir(parents=True)
        files.pid_file.write_text(f"{stranger.pid} {stranger.pid} not-its-mark\n")
        assert stop_recorded(files, timeout_s=1)
        assert pid_alive(stranger.pid)
        assert MARK_ENV not in os.environ
    finally:
        stranger.kill()
        stranger.wait()


# The leader thread exits (pthread_exit) while another thread keeps a port listening: the
# state a killed multi-threaded server is in for a moment, here for as long as we like.
_LEADER_GONE_THREAD_LISTENING = """
import ctypes, socket, sys, threading, time
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print(server.getsockname()[1], flush=True)
threading.Thread(target=time.sleep, args=(600,)).start()
ctypes.CDLL(None).pthread_exit(None)
"""


def test_a_process_whose_leader_thread_is_a_zombie_is_alive_while_a_thread_runs() -> None:
    child = subprocess.Popen([sys.executable, "-c", _LEADER_GONE_THREAD_LISTENING],
                             stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        deadline = time.monotonic() + 5
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(") ", 1)[-1][:1] != "Z":
            assert time.monotonic() < deadline, "the leader thread did not exit"
            time.sleep(0.02)
        assert port_open(port)  # its socket is still open...
        assert pid_alive(child.pid)  # ...so it is alive (a restart would find the port taken)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    assert not pid_alive(child.pid)


def test_a_failed_start_says_how_the_process_ended_and_what_it_wrote(tmp_path: Path) -> None:
    files = ServiceFiles("dummy", tmp_path)
    files.log_file.parent.mkdir(parents=True)
    files.log_file.write_text("an earlier run\n")
    since = files.log_file.stat().st_size
    pid = start_detached(files, [sys.executable, "-c",
                                 "print('address in use'); raise SystemExit(3)"])
    deadline = time.monotonic() + 10
    while pid_alive(pid):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    why = start_failure(files, pid, since)
    assert "exit code 3" in why and "address in use" in why and "earlier" not in why


def test_launch_returns_once_the_service_is_ready(tmp_path: Path) -> None:
    files = ServiceFiles("dummy", tmp_path)
    ready = tmp_path / "ready"
    pid = launch(files, [sys.executable, "-c",
                         f"import pathlib, time; pathlib.Path({str(ready)!r}).touch(); "
                         "time.sleep(600)"],
                 ready=ready.exists, timeout_s=20, what="dummy")
    try:
        assert files.recorded_pid() == pid and pid_alive(pid)
    finally:
        stop_recorded(files, timeout_s=5)
    assert not pid_alive(pid)


def test_launch_of_a_service_that_exits_names_its_exit_and_output(tmp_path: Path) -> None:
    files = ServiceFiles("dummy", tmp_path)
    try:
        launch(files, [sys.executable, "-c", "print('bad flag'); raise SystemExit(2)"],
               ready=lambda: False, timeout_s=20, what="dummy", interval_s=0.05)
    except RuntimeError as exc:
        assert "dummy exited during start-up" in str(exc)
        assert "exit code 2" in str(exc) and "bad flag" in str(exc)
    else:
        raise AssertionError("a service that exits at once was reported as started")


def test_a_taken_port_is_refused_with_the_hint(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        try:
            refuse_taken_ports([port], hint="set THE_PORT")
        except RuntimeError as exc:
            assert f"port {port} is taken" in str(exc) and "set THE_PORT" in str(exc)
        else:
            raise AssertionError("a taken port was not refused")


def test_a_taken_port_is_one_line_naming_the_port_and_what_to_do() -> None:
    """`make demo` beside another checkout's running stack: one line, not a traceback."""
    from pipeline.cli.entry import as_config_error

    error = as_config_error(PortTaken([54329], "set SECANALYST_DEV__POSTGRES_PORT"))
    assert error is not None
    assert str(error).startswith("port = 54329: taken by another program")
    assert "secanalyst dev down" in str(error) and "SECANALYST_DEV__POSTGRES_PORT" in str(error)
