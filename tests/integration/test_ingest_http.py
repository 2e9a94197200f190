"""The ingest endpoint as deployed: `secanalyst ingest-server` (uvicorn) on a free port,
its own PostgreSQL (API keys) and Tansu broker, and the Wazuh integration script run as
integratord runs it. What lands on alerts.raw is read back with aiokafka."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.cli.usage import create_api_key
from pipeline.config import DatabaseSettings, KafkaSettings, Settings
from pipeline.devstack.kafka import TansuBroker
from pipeline.devstack.postgres import EmbeddedPostgres
from pipeline.kafka.admin import ensure_topics
from pipeline.store.migrate import migrate
from tests.servers import free_port, wait_http

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "deploy" / "wazuh" / "custom-secanalyst"
SAMPLE = json.loads((ROOT / "samples" / "wazuh-alerts.jsonl").read_text().splitlines()[0])


@dataclass(frozen=True)
class Ingest:
    url: str
    settings: Settings
    key: str


@pytest.fixture(scope="module")
def ingest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingest]:
    state = tmp_path_factory.mktemp("ingest")
    postgres = EmbeddedPostgres(state_dir=state, port=free_port())
    broker = TansuBroker(state, free_port())
    server: subprocess.Popen[bytes] | None = None
    postgres.start()
    try:
        broker.start()
        settings = Settings(state_dir=state,
                            database=DatabaseSettings(url=postgres.address()),  # type: ignore[arg-type]
                            kafka=KafkaSettings(bootstrap_servers=broker.address()))
        migrate(settings.database_url)
        asyncio.run(ensure_topics(settings))
        _, key = create_api_key(settings, "acme", "wazuh-manager-1")
        port = free_port()
        env = {**os.environ, "SECANALYST_STATE_DIR": str(state),
               "SECANALYST_DATABASE__URL": postgres.address(),
               "SECANALYST_KAFKA__BOOTSTRAP_SERVERS": broker.address(),
               "SECANALYST_GATEWAY__API_KEY_CACHE_S": "0",
               "SECANALYST_LOG_FORMAT": "json"}
        server = subprocess.Popen([str(ROOT / ".venv/bin/secanalyst"), "ingest-server",
                                   "--port", str(port)], cwd=state, env=env)
        wait_http(f"http://127.0.0.1:{port}/healthz", server)
        yield Ingest(f"http://127.0.0.1:{port}/ingest/wazuh", settings, key)
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(15)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        broker.stop()
        postgres.stop()


def alert(alert_id: str | None = None) -> dict[str, Any]:
    return {**SAMPLE, "id": alert_id or f"it-{uuid.uuid4().hex}"}


async def _read_until(settings: Settings, sentinel: str,
                      timeout_s: float) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    consumer = AIOKafkaConsumer(settings.kafka.topics.raw,
                                bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    seen: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while sentinel not in seen and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    value = json.loads(record.value)
                    headers = {k: v.decode() for k, v in record.headers}
                    inner = value.get("_source") or value
                    seen[str(inner.get("id"))] = (value, headers)
    finally:
        await consumer.stop()
    return seen


def on_topic(ingest: Ingest, sentinel: str,
             timeout_s: float = 30) -> dict[str, tuple[dict[str, Any], dict[str, str]]]:
    """Every message on alerts.raw by alert id, read until `sentinel` shows up."""
    found = asyncio.run(_read_until(ingest.settings, sentinel, timeout_s))
    assert sentinel in found, f"{sentinel} never reached {ingest.settings.kafka.topics.raw}"
    return found


def run_script(tmp_path: Path, body: dict[str, Any], key: str, url: str,
               *extra: str) -> tuple[int, str]:
    alert_file = tmp_path / f"{uuid.uuid4().hex}.alert"
    alert_file.write_text(json.dumps(body))
    log = tmp_path / "integrations.log"
    proc = subprocess.run([sys.executable, str(SCRIPT), str(alert_file), key, url, *extra],
                          env={**os.environ, "SECANALYST_INTEGRATION_LOG": str(log)},
                          timeout=60, check=False)
    return proc.returncode, log.read_text() if log.exists() else ""


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_integratord_call_lands_on_alerts_raw_with_the_tenant(ingest: Ingest,
                                                              tmp_path: Path) -> None:
    body = alert()
    options = tmp_path / "1732761234-1234.options"
    options.write_text(json.dumps({"timeout": 5, "retries": 2}))
    code, log = run_script(tmp_path, body, ingest.key, ingest.url, "debug", str(options))
    assert code == 0, log
    value, headers = on_topic(ingest, body["id"])[body["id"]]
    assert value == body
    assert headers["tenant_id"] == "acme" and headers["priority"] == "live"
    assert ingest.key not in log and "<api_key>" in log


def test_wrong_key_is_401_and_nothing_is_produced(ingest: Ingest, tmp_path: Path) -> None:
    refused = alert()
    wrong = "sak_0123456789ab_" + "x" * 43
    answer = httpx.post(ingest.url, json=refused, headers=bearer(wrong))
    assert answer.status_code == 401
    assert httpx.post(ingest.url, json=refused).status_code == 401
    code, log = run_script(tmp_path, refused, wrong, ingest.url)
    assert code == 8 and "HTTP 401" in log  # refused, not retried
    sentinel = alert()
    assert httpx.post(ingest.url, json=sentinel, headers=bearer(ingest.key)).status_code == 202
    assert refused["id"] not in on_topic(ingest, sentinel["id"])


def test_malformed_bodies_are_400_naming_the_problem(ingest: Ingest) -> None:
    ok, bad = alert(), alert()
    broken = httpx.post(ingest.url, content=b'{"rule": {"id": "1"', headers={
        **bearer(ingest.key), "Content-Type": "application/json"})
    assert broken.status_code == 400
    assert "not valid JSON" in broken.json()["error"]["message"]
    mixed = httpx.post(ingest.url, json=[ok, "oops", bad], headers=bearer(ingest.key))
    assert mixed.status_code == 400
    assert mixed.json()["error"]["message"].startswith("item 1: expected a JSON object")
    lines = httpx.post(ingest.url, content=json.dumps(ok).encode() + b"\n{nope\n",
                       headers={**bearer(ingest.key), "Content-Type": "application/x-ndjson"})
    assert lines.status_code == 400 and lines.json()["error"]["param"] == "line 2"
    sentinel = alert()
    httpx.post(ingest.url, json=sentinel, headers=bearer(ingest.key))
    found = on_topic(ingest, sentinel["id"])
    assert ok["id"] not in found and bad["id"] not in found  # all or nothing


def test_oversized_deep_or_huge_number_alert_refuses_the_request_and_publishes_nothing(
        ingest: Ingest) -> None:
    before, after = alert(), alert()
    big = {**alert(), "full_log": "A" * 1_200_000}  # over the producer's 1 MiB request
    headers = {**bearer(ingest.key), "Content-Type": "application/json"}
    oversized = httpx.post(ingest.url, json=[before, big, after], headers=headers, timeout=30)
    assert oversized.status_code == 413, oversized.text  # not a retryable 503
    assert oversized.json()["error"]["param"] == "item 1"
    deep = httpx.post(ingest.url, content=b"[" * 10_000 + b"]" * 10_000, headers=headers)
    assert deep.status_code == 400 and "nested deeper" in deep.json()["error"]["message"]
    number = httpx.post(ingest.url, headers=headers, content=b"[" + json.dumps(before).encode()
                        + b', {"rule": {"level": ' + b"1" * 5000 + b"}}]")
    assert number.status_code == 400
    assert number.json()["error"]["message"].startswith("item 1: a number has more digits")
    sentinel = alert()
    assert httpx.post(ingest.url, json=sentinel, headers=headers).status_code == 202
    found = on_topic(ingest, sentinel["id"])
    assert not {before["id"], big["id"], after["id"]} & found.keys()  # all or nothing


def test_50_mb_body_is_413_before_it_is_read(ingest: Ingest) -> None:
    host, port = ingest.url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(b"POST /ingest/wazuh HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer " + ingest.key.encode() + b"\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"
                     + b"[" + b" " * 65_536)
        started, reply = time.monotonic(), ""
        while "larger than" not in reply and time.monotonic() - started < 10:
            piece = conn.recv(65_536).decode("latin-1")
            if not piece:
                break
            reply += piece
    assert reply.startswith("HTTP/1.1 413"), reply[:200]
    assert "larger than 10000000 bytes" in reply


def test_gzip_body_accepted_and_gzip_bomb_refused(ingest: Ingest) -> None:
    first, second = alert(), alert()
    lines = (json.dumps(first) + "\n" + json.dumps(second) + "\n").encode()
    answer = httpx.post(ingest.url, content=gzip.compress(lines), headers={
        **bearer(ingest.key), "Content-Type": "application/x-ndjson",
        "Content-Encoding": "gzip"})
    assert answer.status_code == 202 and answer.json()["accepted"] == 2
    found = on_topic(ingest, second["id"])
    assert found[first["id"]][1]["tenant_id"] == "acme"
    bomb = gzip.compress(b"[" + b" " * 20_000_000 + b"]")
    assert len(bomb) < 100_000
    refused = httpx.post(ingest.url, content=bomb, headers={
        **bearer(ingest.key), "Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert refused.status_code == 413
    assert "decompressed body" in refused.json()["error"]["message"]


def test_wazuh5_notification_envelope_is_unwrapped(ingest: Ingest) -> None:
    a, b = alert(), alert()
    envelope = {"monitor": "secanalyst", "hits": {"hits": [{"_source": a}, {"_source": b}]}}
    answer = httpx.post(ingest.url, json=envelope, headers=bearer(ingest.key))
    assert answer.status_code == 202 and answer.json()["accepted"] == 2
    found = on_topic(ingest, b["id"])
    assert found[a["id"]][0]["_source"] == a


def test_script_retries_then_gives_up_when_unreachable(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/ingest/wazuh"
    options = tmp_path / "x.options"
    options.write_text(json.dumps({"retries": 2, "backoff": 0.05, "timeout": 2}))
    code, log = run_script(tmp_path, alert(), "sak_key", url, "", str(options))
    assert code == 9
    assert log.count("# Attempt") == 3 and "Giving up after 3 attempts" in log


def test_tail_follows_rotation_into_alerts_raw(ingest: Ingest, tmp_path: Path) -> None:
    alerts_json = tmp_path / "alerts.json"
    alerts_json.touch()
    env = {**os.environ, "SECANALYST_KAFKA__BOOTSTRAP_SERVERS":
           ingest.settings.kafka_bootstrap, "SECANALYST_STATE_DIR": str(tmp_path),
           "SECANALYST_INGEST__TAIL_POLL_S": "0.1", "SECANALYST_LOG_FORMAT": "json"}
    tail = subprocess.Popen([str(ROOT / ".venv/bin/secanalyst"), "tail", str(alerts_json),
                             "--tenant", "globex"], env=env)
    try:
        position = tmp_path / "tail" / "alerts.json.position"
        deadline = time.monotonic() + 30
        while not position.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        before, after = alert(), alert()
        with alerts_json.open("a") as out:
            out.write(json.dumps(before) + "\n")
        on_topic(ingest, before["id"])
        alerts_json.rename(tmp_path / "alerts-rotated.json")
        alerts_json.write_text(json.dumps(after) + "\n")
        found = on_topic(ingest, after["id"])
        assert found[before["id"]][1]["tenant_id"] == "globex"
        assert found[after["id"]][1]["tenant_id"] == "globex"
    finally:
        tail.terminate()
        assert tail.wait(15) == 0


async def _read_topic(settings: Settings, topic: str,
                      quiet_s: float = 3.0) -> list[tuple[dict[str, Any], dict[str, str]]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    found: list[tuple[dict[str, Any], dict[str, str]]] = []
    try:
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    try:
                        value = json.loads(record.value)
                    except ValueError:
                        value = {"_raw": record.value.decode()}
                    found.append((value, {k: v.decode() for k, v in record.headers}))
                last = time.monotonic()
    finally:
        await consumer.stop()
    return found


def test_backfill_estimates_skips_verdicts_reports_damage_and_resumes(
        ingest: Ingest, tmp_path: Path) -> None:
    import psycopg

    docs = [alert() for _ in range(30)]
    with psycopg.connect(ingest.settings.database_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO verdicts (tenant_id, alert_id, rule_id, rule_level, severity,
               severity_source, summary, status, model_name, prompt_version, input_tokens,
               output_tokens, latency_ms) VALUES ('acme', %s, '5706', 6, 'low', 'rule',
               's', 'ok', 'm', 'v', 1, 1, 1)""", (docs[0]["id"],))
        for _ in range(10):
            conn.execute(
                """INSERT INTO llm_usage_events (id, tenant_id, model_name, alert_id,
                   input_tokens, output_tokens, total_tokens, status_code)
                   VALUES (gen_random_uuid(), 'acme', 'm', 'x', 1000, 200, 1200, 200)""")
    plain = tmp_path / "archive" / "alerts.json"
    plain.parent.mkdir()
    plain.write_text("".join(json.dumps(d) + "\n" for d in docs[:10]) + "{broken\n")
    packed = gzip.compress("".join(json.dumps(d) + "\n" for d in docs[10:]).encode())
    (tmp_path / "archive" / "ossec-alerts-02.json.gz").write_bytes(packed[:len(packed) - 30])
    env = {**os.environ, "SECANALYST_KAFKA__BOOTSTRAP_SERVERS":
           ingest.settings.kafka_bootstrap, "SECANALYST_DATABASE__URL":
           ingest.settings.database_url, "SECANALYST_STATE_DIR": str(tmp_path),
           "SECANALYST_INGEST__CONFIRM_ABOVE_COST": "0", "SECANALYST_LOG_FORMAT": "json",
           "COLUMNS": "200"}
    command = [str(ROOT / ".venv/bin/secanalyst"), "backfill", str(tmp_path / "archive"),
               "--tenant", "acme", "--estimate"]
    refused = subprocess.run(command, env=env, input="n\n", capture_output=True, text=True,
                             timeout=120, check=False)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "llm_usage_events (10 calls)" in refused.stdout and "Proceed?" in refused.stdout
    first = subprocess.run([*command, "--yes"], env=env, capture_output=True, text=True,
                           timeout=120, check=False)
    assert first.returncode == 1, first.stdout + first.stderr  # a damaged file: reported
    assert "truncated gzip" in first.stdout
    messages = asyncio.run(_read_topic(ingest.settings, ingest.settings.kafka.topics.backfill))
    ids = [m.get("id") for m, _ in messages]
    assert docs[0]["id"] not in ids  # already had a verdict
    assert set(ids) >= {d["id"] for d in docs[1:10]} and len(ids) == len(set(ids))
    assert {"_raw": "{broken"} not in [m for m, _ in messages]  # screened by the producer:
    letters = asyncio.run(_read_topic(ingest.settings, ingest.settings.kafka.topics.dlq))
    broken = [m for m, _ in letters if m.get("original") == "{broken"]
    assert len(broken) == 1 and broken[0]["stage"] == "backfill" and broken[0]["reason"]
    assert {h["priority"] for _, h in messages} == {"batch"}
    assert {h["tenant_id"] for _, h in messages} == {"acme"}
    again = subprocess.run([*command, "--yes"], env=env, capture_output=True, text=True,
                           timeout=120, check=False)
    assert "already done" in again.stdout
    assert len(asyncio.run(_read_topic(ingest.settings,
                                       ingest.settings.kafka.topics.backfill))) == len(messages)
