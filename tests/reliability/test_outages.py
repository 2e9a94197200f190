"""Outages, end to end: a private stack (PostgreSQL, the broker on durable S3 storage, a
simulated vLLM — all on free ports, never the shared stack), the four stages as their own
processes and the ingest server, while a Wazuh hook posts alerts all along. The broker,
PostgreSQL and the model server are each killed mid-run for a while and started again.

What must hold: the ingest endpoint never answers 2xx for an alert it could not hand to
Kafka (an outage is 503 with Retry-After, never a 500), the hook re-sends what was refused
(as Wazuh's integratord and any sane client do), the consumers back off and resume
without a restart of their own, and at the end every accepted alert has exactly one
verdict or a dead letter: 0 lost, 0 with two different verdicts.

CI: 8 s per outage; `make reliability`: 30 s."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from bench.common import varied_alerts
from pipeline.analysis.normalize import normalize
from pipeline.analysis.runbook_loader import load_runbooks
from pipeline.cli.usage import new_api_key
from pipeline.config import DevStackSettings, KafkaSettings, LLMPool, LLMSettings, Settings
from pipeline.devstack import stack
from pipeline.devstack.kafka import TansuBroker
from pipeline.devstack.postgres import EmbeddedPostgres
from pipeline.devstack.private import free_port_run, kill_service
from pipeline.devstack.seaweedfs import PORTS_USED
from pipeline.runtime import STAGES
from pipeline.store.migrate import migrate
from tests.integration.kafka_helpers import read_topic
from tests.integration.test_explain_outage import SimProcess
from tests.reliability.conftest import full_size
from tests.reliability.outcome import letter_alert_id, twice_verdicted
from tests.reliability.report import report_figure, report_row
from tests.reliability.stages import StageProcesses, settings_env
from tests.servers import free_port

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.timeout(1800)
HOOK_TIMEOUT_S = 10  # deploy/wazuh/custom-secanalyst's default


@dataclass
class Hook:
    """A Wazuh hook posting one alert at a time, re-sending refused ones later."""

    url: str
    key: str
    phase: str = "warm-up"
    answers: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    accepted: list[bytes] = field(default_factory=list)
    refused: list[bytes] = field(default_factory=list)
    bad_refusals: list[str] = field(default_factory=list)

    async def post(self, client: httpx.AsyncClient, alert: bytes) -> None:
        try:
            answer = await client.post(self.url, content=alert, timeout=HOOK_TIMEOUT_S, headers={
                "Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        except httpx.HTTPError as exc:  # the server is up all along: it must answer in time
            self.answers[self.phase][type(exc).__name__] += 1
            self.refused.append(alert)
            self.bad_refusals.append(f"{self.phase}: {type(exc).__name__}")
            return
        self.answers[self.phase][str(answer.status_code)] += 1
        if answer.is_success:
            self.accepted.append(alert)
            return
        self.refused.append(alert)
        if answer.status_code != 503 or "retry-after" not in answer.headers:
            self.bad_refusals.append(f"{self.phase}: {answer.status_code} {answer.text[:200]}")


@pytest.fixture
def private_stack() -> Iterator[tuple[Settings, SimProcess]]:
    # Not under pytest's basetemp: the postgres system user must traverse to its data.
    state = Path(tempfile.mkdtemp(prefix="secanalyst-outages-"))
    first = free_port_run(PORTS_USED + 2, start=31000)
    sim = SimProcess(first + PORTS_USED + 2)
    settings = Settings(
        state_dir=state,
        dev=DevStackSettings(seaweedfs_port=first, postgres_port=first + PORTS_USED,
                             kafka_port=first + PORTS_USED + 1, kafka_storage="s3"),
        kafka=KafkaSettings(group_prefix="outages"),
        llm=LLMSettings(pools={"default": LLMPool(
            endpoints=[f"http://127.0.0.1:{sim.port}/v1"], max_context_tokens=8192)}))
    try:
        stack.up(settings)
        yield settings, sim
    finally:
        sim.kill()
        for service in reversed(stack.embedded_services(settings)):
            kill_service(service.files)  # type: ignore[attr-defined]
        shutil.rmtree(state, ignore_errors=True)


async def _wait_http(url: str, timeout_s: float = 90) -> None:
    async with httpx.AsyncClient(timeout=1) as client:
        for _ in range(int(timeout_s * 4)):
            try:
                if (await client.get(url)).is_success:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.25)
    raise TimeoutError(url)


async def _all_started(log_dir: Path, timeout_s: float = 600) -> None:
    """Every stage process has joined (a stage that starts while a dependency is down
    exits with a one-line error, by design: the outages begin once all are running)."""
    for _ in range(int(timeout_s)):
        logs = [log_dir / f"{stage}-1.log" for stage in STAGES]
        if all(p.exists() and b"worker_started" in p.read_bytes() for p in logs):
            return
        await asyncio.sleep(1)
    raise TimeoutError(f"stages not started; logs in {log_dir}")


def _settled(settings: Settings, tenant: str, expected: set[str]) -> tuple[set[str], int]:
    """(accepted alerts with a verdict, verdict rows in all)."""
    with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
        rows = conn.execute("SELECT alert_id FROM verdicts WHERE tenant_id = %s",
                            (tenant,)).fetchall()
    return {r[0] for r in rows} & expected, len(rows)


async def test_broker_database_and_model_outages_lose_nothing(
        private_stack: tuple[Settings, SimProcess]) -> None:
    settings, sim = private_stack
    # Kept after the run (pytest's own tmp dirs are rotated by concurrent sessions).
    tmp_path = Path(tempfile.mkdtemp(prefix="secanalyst-outage-logs-"))
    outage_s = full_size(8, 30)
    tenant = "outages"
    migrate(settings.database_url)
    await load_runbooks(settings, ROOT / "runbooks")
    await sim.start()
    _, key = await new_api_key(settings, tenant, "hook")
    env = settings_env(settings) | {"SECANALYST_GATEWAY__API_KEY_CACHE_S": "60"}
    ingest_port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli.app", "ingest-server", "--port", str(ingest_port)],
        cwd=ROOT, env=env, stdout=(tmp_path / "ingest.log").open("wb"),
        stderr=subprocess.STDOUT)
    procs = StageProcesses(env, tmp_path)
    for stage in STAGES:
        procs.start(stage)
    hook = Hook(f"http://127.0.0.1:{ingest_port}/ingest/wazuh", key)
    alerts = iter(varied_alerts(full_size(600, 2000), seed=77))
    stop_feeding = asyncio.Event()

    async def feed() -> None:
        async with httpx.AsyncClient() as client:
            while not stop_feeding.is_set():
                await hook.post(client, next(alerts))
                await asyncio.sleep(0.5)

    broker = stack.embedded_broker(settings)[-1]
    assert isinstance(broker, TansuBroker)
    postgres = EmbeddedPostgres(settings.state_dir.resolve(), settings.dev.postgres_port)
    outages: list[tuple[str, Callable[[], None], Callable[[], Any]]] = [
        ("broker", lambda: kill_service(broker.files), broker.start),
        ("database", lambda: kill_service(postgres.files), postgres.start),
        ("model server", sim.kill, sim.start),
    ]
    feeder: asyncio.Task[None] | None = None
    try:
        await _wait_http(f"http://127.0.0.1:{ingest_port}/healthz")
        await _all_started(tmp_path)
        feeder = asyncio.create_task(feed())
        expected_first = normalize(varied_alerts(1, seed=77)[0], tenant_id=tenant).alert_id
        for _ in range(600):  # the whole chain works before anything is stopped
            if expected_first in (await asyncio.to_thread(
                    _settled, settings, tenant, {expected_first}))[0]:
                break
            await asyncio.sleep(0.5)
        for name, stop, start in outages:
            hook.phase = f"{name} down"
            await asyncio.to_thread(stop)
            await asyncio.sleep(outage_s)
            hook.phase = f"after {name}"
            started = start()
            if asyncio.iscoroutine(started):
                await started
            await asyncio.sleep(15)
            assert not procs.dead(), (
                f"{procs.dead()} exited during the {name} outage; logs in {tmp_path}")
        stop_feeding.set()
        await feeder
        # The hook re-sends what was refused; everything must be accepted now.
        hook.phase = "re-send"
        refused, hook.refused = hook.refused, []
        async with httpx.AsyncClient() as client:
            for alert in refused:
                await hook.post(client, alert)
        expected = {normalize(a, tenant_id=tenant).alert_id for a in hook.accepted}
        deadline = asyncio.get_running_loop().time() + full_size(600, 1500)
        verdicted: set[str] = set()
        while asyncio.get_running_loop().time() < deadline:
            verdicted, _ = await asyncio.to_thread(_settled, settings, tenant, expected)
            if verdicted == expected:
                break
            await asyncio.sleep(3)
    finally:
        stop_feeding.set()
        if feeder is not None and not feeder.done():
            feeder.cancel()
        procs.stop_all()
        server.terminate()
        server.wait(30)

    letters = await read_topic(settings, settings.kafka.topics.dlq, until=10**9, timeout_s=3)
    dead = {letter_alert_id(m, tenant) for m in letters if m.get("reason")}
    lost = expected - verdicted - dead
    published = await read_topic(settings, settings.kafka.topics.verdicts, until=10**9,
                                 timeout_s=5)
    duplicated = twice_verdicted(published, tenant)
    answers = {phase: dict(counts) for phase, counts in hook.answers.items()}
    outcome = {"outage": f"{outage_s} s each", "accepted": len(expected),
               "verdicted": len(verdicted), "dead-lettered": len(dead & expected),
               "lost": len(lost), "duplicated": len(duplicated),
               "ingest answers": json.dumps(answers)}
    report_row("outages: broker, PostgreSQL, model server (each killed, then restarted)",
               outcome)
    report_figure("reliability.outage_alerts_lost", len(lost), goal="0")
    assert not hook.bad_refusals, f"not 2xx nor 503 + Retry-After: {hook.bad_refusals}"
    assert hook.refused == [], "alerts still refused after every service came back"
    # Only a request already acknowledged at the moment of the kill may read 202 there.
    assert answers.get("broker down", {}).get("202", 0) <= 1, answers
    assert not lost, f"{len(lost)} accepted alerts have no verdict and no dead letter"
    assert not duplicated, f"alerts with two different verdicts: {duplicated}"
