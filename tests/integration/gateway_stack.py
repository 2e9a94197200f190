"""`secanalyst gateway` as deployed, for tests: uvicorn on a free port, its own PostgreSQL
(migrated, partitions made), private vLLM simulators as its replicas (one by default)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.cli.usage import maintain_partitions
from pipeline.config import DatabaseSettings, Settings
from pipeline.devstack.postgres import EmbeddedPostgres
from pipeline.store.migrate import migrate
from tests.servers import free_port, stop, wait_http

ROOT = Path(__file__).parents[2]
MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class GatewayStack:
    url: str  # the gateway
    sim: str  # the (first) simulator's base URL (…/v1)
    settings: Settings  # its database
    env: dict[str, str]  # the gateway's environment (for other processes of the stack)
    sims: tuple[str, ...] = ()  # every simulator replica's base URL, `sim` first


@contextmanager
def gateway_stack(name: str, sim_flags: list[str], *, max_context_tokens: int,
                  tenants: Mapping[str, object], replicas: int = 1) -> Iterator[GatewayStack]:
    # Not under pytest's basetemp: a pytest session started meanwhile (another
    # engineer's) resets /tmp/pytest-of-<user> to 0700, out of the postgres user's reach.
    state = Path(tempfile.mkdtemp(prefix=f"secanalyst-{name}-"))
    postgres = EmbeddedPostgres(state_dir=state, port=free_port())
    postgres.start()
    sim_ports, gw_port = [free_port() for _ in range(replicas)], free_port()
    sims = [subprocess.Popen([sys.executable, "-m", "bench.vllm_sim", "--port", str(port),
                              "--model", MODEL, *sim_flags], cwd=ROOT) for port in sim_ports]
    gw: subprocess.Popen[bytes] | None = None
    try:
        settings = Settings(state_dir=state,
                            database=DatabaseSettings(url=postgres.address()))  # type: ignore[arg-type]
        migrate(settings.database_url)
        maintain_partitions(settings)
        sim_urls = [f"http://127.0.0.1:{port}/v1" for port in sim_ports]
        env = {**os.environ,
               "SECANALYST_STATE_DIR": str(state),
               "SECANALYST_DATABASE__URL": postgres.address(),
               "SECANALYST_LLM__POOLS": json.dumps({"default": {
                   "endpoints": sim_urls, "max_context_tokens": max_context_tokens}}),
               "SECANALYST_GATEWAY__API_KEY_CACHE_S": "0",
               "SECANALYST_TENANTS__OVERRIDES": json.dumps(dict(tenants)),
               "SECANALYST_LOG_FORMAT": "json"}
        for port, sim in zip(sim_ports, sims, strict=True):
            wait_http(f"http://127.0.0.1:{port}/health", sim)
        gw = subprocess.Popen([str(ROOT / ".venv/bin/secanalyst"), "gateway", "--port",
                               str(gw_port)], cwd=state, env=env)
        wait_http(f"http://127.0.0.1:{gw_port}/healthz", gw)
        yield GatewayStack(f"http://127.0.0.1:{gw_port}", sim_urls[0], settings, env,
                           tuple(sim_urls))
    finally:
        if gw is not None:
            stop(gw)
        for sim in sims:
            stop(sim)
        postgres.stop()
        shutil.rmtree(state, ignore_errors=True)
