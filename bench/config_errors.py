"""Bad configuration through the real `secanalyst` command: each case is run as a
subprocess in a clean directory (no ./secanalyst.toml, no SECANALYST_* variables but the
case's), and its stderr is checked: one line, naming the setting, no traceback.

    .venv/bin/python -m bench.config_errors

records `config.errors_with_traceback` (cases whose output held a traceback; goal 0).
tests/unit/test_config_errors.py runs the same cases.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

SECANALYST = Path(sys.executable).parent / "secanalyst"
COMMAND = ".venv/bin/python -m bench.config_errors"


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Case:
    name: str
    argv: list[str]
    must_name: str  # the setting (or file) the line must name
    env: dict[str, str] = field(default_factory=dict)
    config_toml: str | None = None  # written to ./bad.toml, named by SECANALYST_CONFIG_FILE
    must_not_show: str | None = None  # a secret that must be masked


def cases() -> list[Case]:
    p = closed_port()
    return [
        Case("database unreachable", ["db", "migrate"], "SECANALYST_DATABASE__URL",
             env={"SECANALYST_DATABASE__URL":
                  f"postgresql://analyst:s3cret-pw@127.0.0.1:{p}/secanalyst"},
             must_not_show="s3cret-pw"),
        Case("broker unreachable", ["ingest", "-"], "SECANALYST_KAFKA__BOOTSTRAP_SERVERS",
             env={"SECANALYST_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{p}"}),
        Case("model server unreachable", ["run", "--stage", "explain"],
             "SECANALYST_LLM__POOLS",
             env={"SECANALYST_LLM__POOLS":
                  f'{{"gpu": {{"endpoints": ["http://127.0.0.1:{p}/v1"]}}}}'}),
        Case("embedded stack not started", ["run"], "secanalyst dev up",
             env={"SECANALYST_DEV__POSTGRES_PORT": str(p), "SECANALYST_DEV__KAFKA_PORT": str(p),
                  "SECANALYST_DEV__VLLM_PORT": str(p)}),
        Case("malformed config file", ["dev", "status"], "bad.toml line 3",
             config_toml='[database]\npool_min_size = 2\n[kafka\nbootstrap_servers = "x"\n'),
        Case("missing config file", ["dev", "status"], "SECANALYST_CONFIG_FILE",
             env={"SECANALYST_CONFIG_FILE": "does-not-exist.toml"}),
        Case("unknown key in the file", ["dev", "status"], "[database] urll",
             config_toml='[database]\nurll = "postgresql://h/db"\n'),
        Case("unknown environment variable", ["dev", "status"], "SECANALYST_DATABSE__URL",
             env={"SECANALYST_DATABSE__URL": "postgresql://h/db"}),
        Case("invalid value in the environment", ["dev", "status"],
             "SECANALYST_DATABASE__POOL_MAX_SIZE",
             env={"SECANALYST_DATABASE__POOL_MAX_SIZE": "lots"}),
        Case("invalid value in the file", ["dev", "status"], "[kafka] max_batch_records",
             config_toml='[kafka]\nmax_batch_records = "many"\n'),
    ]


@dataclass(frozen=True)
class Outcome:
    returncode: int
    stdout: str
    stderr: str

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def traceback(self) -> bool:
        return "Traceback" in self.stderr or "Traceback" in self.stdout


def run_case(case: Case, workdir: Path, *, debug: bool = False) -> Outcome:
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("SECANALYST_")}
    env.update(SECANALYST_STATE_DIR=str(workdir / "state"), COLUMNS="200", **case.env)
    if case.config_toml is not None:
        (workdir / "bad.toml").write_text(case.config_toml)
        env["SECANALYST_CONFIG_FILE"] = "bad.toml"
    argv = [str(SECANALYST), *(["--debug"] if debug else []), *case.argv]
    done = subprocess.run(argv, cwd=workdir, env=env, input="", capture_output=True,
                          text=True, timeout=120)
    return Outcome(done.returncode, done.stdout, done.stderr)


def main() -> None:
    from bench.record import record

    with_traceback = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(cases()):
            outcome = run_case(case, Path(tmp) / str(i))
            with_traceback += outcome.traceback
            print(f"{case.name:34} exit {outcome.returncode}  {len(outcome.lines)} line(s)"
                  f"{'  TRACEBACK' if outcome.traceback else ''}\n    "
                  f"{outcome.lines[-1] if outcome.lines else '(nothing on stderr)'}")
    record("config.errors_with_traceback", with_traceback, goal="0", command=COMMAND)
    print(f"config.errors_with_traceback = {with_traceback}")


if __name__ == "__main__":
    main()
