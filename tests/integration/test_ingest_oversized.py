"""`secanalyst ingest FILE` on the real broker (the session's embedded Tansu): a 2 MB
alert in the middle of the file is dead-lettered with its line number, and every other
line is sent — nothing after it is lost, the exit code is 0."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.config import Settings
from pipeline.kafka.admin import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
ROOT = Path(__file__).parents[2]
SAMPLES = [line for line in (ROOT / "samples" / "wazuh-alerts.jsonl").read_bytes().splitlines()
           if line.strip()]


async def records_of(settings: Settings, topic: str, tenant: str, *, until: int,
                     timeout_s: float = 60) -> list[bytes]:
    """Values on `topic` with this tenant's header, read from the beginning (raw bytes:
    the session's topics also hold other tests' malformed alerts)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest",
                                fetch_max_bytes=8 << 20, max_partition_fetch_bytes=4 << 20)
    await consumer.start()
    found: list[bytes] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found) < until and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                found.extend(r.value for r in records
                             if dict(r.headers).get("tenant_id") == tenant.encode())
    finally:
        await consumer.stop()
    return found


def ingest_command(settings: Settings, path: Path, tenant: str,
                   ) -> subprocess.CompletedProcess[str]:
    """`secanalyst ingest PATH --tenant TENANT` on the session's broker and topics."""
    env = {**os.environ, "SECANALYST_KAFKA__BOOTSTRAP_SERVERS": settings.kafka_bootstrap,
           "SECANALYST_KAFKA__TOPICS__RAW": settings.kafka.topics.raw,
           "SECANALYST_KAFKA__TOPICS__DLQ": settings.kafka.topics.dlq}
    return subprocess.run([sys.executable, "-m", "pipeline.cli.app", "ingest", str(path),
                           "--tenant", tenant], cwd=path.parent, env=env,
                          capture_output=True, text=True, timeout=180)


def test_ingest_dead_letters_a_2mb_alert_and_sends_every_other_line(
        settings: Settings, tenant: str, tmp_path: Path) -> None:
    asyncio.run(ensure_topics(settings))
    who = f"{tenant}-oversized"
    lines = [json.loads(line) for line in SAMPLES[:20]]
    big = json.dumps({**lines[0], "id": "oversized", "full_log": "A" * 2_000_000}).encode()
    encoded = [json.dumps({**alert, "id": f"{who}-{i}"}).encode()
               for i, alert in enumerate(lines)]
    path = tmp_path / "alerts.jsonl"
    path.write_bytes(b"\n".join([*encoded[:10], big, *encoded[10:]]) + b"\n")
    done = ingest_command(settings, path, who)
    assert done.returncode == 0, done.stdout + done.stderr
    output = " ".join((done.stdout + done.stderr).split())
    assert "published 20 alerts" in output and "1 lines refused" in output
    assert re.search(r'"?line"?[=:] ?11\b', output), output  # the warning names the line

    sent = asyncio.run(records_of(settings, settings.kafka.topics.raw, who, until=20))
    assert sorted(sent) == sorted(encoded)  # every other line, nothing lost after it
    letters = [json.loads(v) for v in asyncio.run(
        records_of(settings, settings.kafka.topics.dlq, who, until=1))]
    assert len(letters) == 1
    letter = letters[0]
    assert letter["stage"] == "ingest" and letter["reason"].startswith("line 11: ")
    assert letter["original_truncated"] and letter["original_size"] == len(big)
    assert letter["original_sha256"] == hashlib.sha256(big).hexdigest()
    assert big.startswith(letter["original"].encode())


def test_ingest_exits_1_when_every_line_is_refused(settings: Settings, tenant: str,
                                                   tmp_path: Path) -> None:
    asyncio.run(ensure_topics(settings))
    path = tmp_path / "refused.jsonl"
    path.write_bytes(b"[" * 5000 + b"]" * 5000 + b"\n\xff\xfe\n")
    done = ingest_command(settings, path, f"{tenant}-refused")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "published 0 alerts" in done.stdout and "2 lines refused" in done.stdout
    assert "Traceback" not in done.stderr
