"""Stage processes for the reliability tests: one `secanalyst run --stage X` process per
stage, each killable and restartable, pointed at a test's own topics (and, for the outage
test, its own private services) through the environment, as an operator would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from pipeline.config import Settings

ROOT = Path(__file__).parents[2]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a child process these settings (the parts tests vary)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECANALYST_")}
    env.update({
        "SECANALYST_KAFKA__GROUP_PREFIX": settings.kafka.group_prefix,
        "SECANALYST_LOG_FORMAT": "json",
        "SECANALYST_STATE_DIR": str(settings.state_dir.resolve()),
        "SECANALYST_DEV__POSTGRES_PORT": str(settings.dev.postgres_port),
        "SECANALYST_DEV__KAFKA_PORT": str(settings.dev.kafka_port),
        "SECANALYST_DEV__SEAWEEDFS_PORT": str(settings.dev.seaweedfs_port),
        "SECANALYST_DEV__KAFKA_STORAGE": settings.dev.kafka_storage,
        "PYTHONPATH": str(ROOT),
    })
    for name, value in settings.kafka.topics.model_dump().items():
        if isinstance(value, str):
            env[f"SECANALYST_KAFKA__TOPICS__{name.upper()}"] = value
    if settings.llm.pools:
        env["SECANALYST_LLM__POOLS"] = json.dumps(
            {name: pool.model_dump(mode="json") for name, pool in settings.llm.pools.items()})
    return env


class StageProcesses:
    """One process per stage, each killable and restartable; logs under `log_dir`."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self._env = env
        self._log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.starts: dict[str, int] = defaultdict(int)

    def start(self, stage: str) -> None:
        self.starts[stage] += 1
        log = (self._log_dir / f"{stage}-{self.starts[stage]}.log").open("wb")
        self.procs[stage] = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli.app", "run", "--stage", stage], cwd=ROOT,
            env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def kill(self, stage: str) -> None:
        proc = self.procs[stage]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def dead(self) -> list[str]:
        """Stages whose process exited by itself."""
        return [stage for stage, p in self.procs.items() if p.poll() is not None]

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
