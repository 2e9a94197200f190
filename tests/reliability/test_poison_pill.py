"""Poison-pill regression on the real broker and database: one hostile alert at each
position of a batch of 64 on alerts.raw never stalls the partition.

For each kind of poison, each position: the 63 good alerts get through normalize (a row
in `alerts`, a message on alerts.normalized), the poison is either made storable and
flagged (NUL, lone surrogate) or dead-lettered with a reason (the rest), and the consumer
group's lag is back to 0. The kinds are the ones outside testing found jamming a partition
(issue 10), plus one only PostgreSQL refuses (an alert id too long for the primary-key
index), which the batch runner's bisection must find on its own, once with a malformed
neighbour whose dead letter must go out all the same.

Only the normalize stage runs (`run_worker(settings, ["normalize"], stop)`), on topics and
a consumer group of this test's own. CI runs positions first, middle and last; `make
reliability` runs every position 0..63.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from psycopg_pool import AsyncConnectionPool

from pipeline.analysis.normalize import normalize
from pipeline.config import Settings
from pipeline.kafka.messaging import TENANT_HEADER
from pipeline.worker import run_worker
from tests.integration.conftest import session_settings
from tests.integration.kafka_helpers import read_topic
from tests.reliability.conftest import full_size
from tests.reliability.report import report_figure, report_row

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

BATCH = 64
# Spread evenly over the batch: first, middle, last in CI; every position 0..63 in full.
_COUNT = full_size(3, BATCH)
POSITIONS = sorted({round(i * (BATCH - 1) / (_COUNT - 1)) for i in range(_COUNT)})
ROUND_TIMEOUT_S = 120.0


def alert(alert_id: str, **overrides: object) -> dict[str, object]:
    document: dict[str, object] = {
        "timestamp": "2026-11-20T08:14:02.118+0000", "id": alert_id,
        "rule": {"level": 5, "id": "5710", "groups": ["syslog", "sshd"],
                 "description": "sshd: Attempt to login using a non-existent user"},
        "agent": {"id": "001", "name": "web-01", "ip": "10.0.0.5"},
        "full_log": "sshd[1]: Invalid user paco from 192.0.2.7 port 50022",
        "data": {"srcip": "192.0.2.7", "srcuser": "paco"}}
    document.update(overrides)
    return document


def encode(document: dict[str, object]) -> bytes:
    return json.dumps(document).encode()  # ensure_ascii: a lone surrogate stays "\ud800"


def nested(depth: int) -> bytes:
    return encode(alert("placeholder", data="NESTED")).replace(
        b'"NESTED"', b'{"a":' * depth + b"1" + b"}" * depth)


@dataclass(frozen=True)
class Poison:
    """A hostile alert and what must become of it."""

    kind: str
    value: Callable[[str], bytes]  # the alert's bytes, given the id it should carry
    dead_letter: str | None  # expected words of the DLQ reason; None: stored, flagged
    # A malformed alert next to the poison: its own dead letter (sent by the stage, after
    # the database write the poison breaks) must go out all the same.
    malformed_neighbour: bool = False
    # The flag a stored poison's row carries (None: stored, no flag asked for).
    flag: str | None = "text_sanitized"


MALFORMED = Poison("malformed neighbour", lambda i: b'"not an object"', "expected a JSON object")


POISONS = [
    Poison("lone surrogate", lambda i: encode(alert(i, data={"srcuser": "\ud800"})), None),
    Poison("NUL in a non-log field",
           lambda i: encode(alert(i, agent={"id": "001", "name": "web\u0000-01"})), None),
    Poison("depth 900", lambda i: nested(900), "nested deeper than 64"),
    Poison("depth 10,000", lambda i: nested(10_000), "nested deeper than 64"),
    Poison("non-object JSON", lambda i: b'["not", "an", "alert"]', "expected a JSON object"),
    Poison("invalid UTF-8",
           lambda i: encode(alert(i, full_log="BAD")).replace(b'"BAD"', b'"\xff\xfe"'),
           "not UTF-8"),
    # PostgreSQL once refused this one (index row over the btree limit) and the batch
    # runner's bisection dead-lettered it; normalize now keys an id longer than any Wazuh
    # writes by its hash, so it is stored and analysed like any other alert.
    Poison("alert id over the index limit", lambda i: encode(alert(secrets.token_hex(10_000))),
           None, flag=None),
    Poison("alert id over the index limit, malformed neighbour",
           lambda i: encode(alert(secrets.token_hex(10_000))), None,
           malformed_neighbour=True, flag=None),
]


@pytest.fixture(scope="module")
def poison_settings(settings: Settings, run_id: str) -> Settings:
    """Topics and consumer group of this module's own; 64-record batches."""
    own = session_settings(f"{run_id}pp")
    return own.model_copy(update={"kafka": own.kafka.model_copy(
        update={"max_batch_records": BATCH})})


@pytest_asyncio.fixture(scope="module")
async def normalize_worker(poison_settings: Settings) -> AsyncIterator[asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(poison_settings, ["normalize"], stop))
    yield task
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 60)


async def committed(admin: AIOKafkaAdminClient, group: str, tp: TopicPartition) -> int:
    offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    found = offsets.get(tp)
    return found.offset if found is not None and found.offset >= 0 else 0


async def test_a_poison_alert_never_stalls_its_partition(
        poison_settings: Settings, db: AsyncConnectionPool,
        normalize_worker: asyncio.Task[None]) -> None:
    settings = poison_settings
    topics = settings.kafka.topics
    tenant = f"poison-{settings.kafka.group_prefix}"
    group = f"{settings.kafka.group_prefix}-normalize"
    raw = TopicPartition(topics.raw, 0)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=50)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    await admin.start()
    good: set[str] = set()
    stored_poison: dict[str, Poison] = {}  # alert id → kind, for the sanitized kinds
    dead_poison: dict[int, tuple[Poison, bytes]] = {}  # offset on alerts.raw → poison
    stalled, round_s = 0, []
    try:
        for poison in POISONS:
            for position in POSITIONS:
                assert not normalize_worker.done(), normalize_worker.exception()
                ids = [f"pp-{poison.kind}-{position}-{i}".replace(" ", "_")
                       for i in range(BATCH)]
                neighbour = (position + 1 if position + 1 < BATCH else position - 1
                             ) if poison.malformed_neighbour else None
                values = [poison.value(alert_id) if i == position
                          else MALFORMED.value(alert_id) if i == neighbour
                          else encode(alert(alert_id)) for i, alert_id in enumerate(ids)]
                started = time.monotonic()
                # One partition, one produce request: the 64 arrive as one batch.
                sends = [await producer.send(topics.raw, value, partition=0,
                                             headers=[(TENANT_HEADER, tenant.encode())])
                         for value in values]
                offsets = [(await sent).offset for sent in sends]
                good.update(alert_id for i, alert_id in enumerate(ids)
                            if i not in (position, neighbour))
                if neighbour is not None:
                    dead_poison[offsets[neighbour]] = (MALFORMED, values[neighbour])
                if poison.dead_letter is None:  # stored under the id normalize gives it
                    stored_poison[normalize(values[position], tenant_id=tenant).alert_id] = poison
                else:
                    dead_poison[offsets[position]] = (poison, values[position])
                end = offsets[-1] + 1
                while await committed(admin, group, raw) < end:
                    if time.monotonic() - started > ROUND_TIMEOUT_S:
                        stalled += 1
                        break
                    await asyncio.sleep(0.05)
                round_s.append(time.monotonic() - started)
                assert not stalled, f"{poison.kind} at {position}: the partition stalled"
    finally:
        await admin.close()
        await producer.stop()

    # Every good alert and every sanitized poison: a row and a message on alerts.normalized.
    async with db.connection() as conn:
        rows = await (await conn.execute(
            "SELECT alert_id, normalized->'flags' FROM alerts WHERE tenant_id = %s",
            (tenant,))).fetchall()
    flags = {alert_id: list(found or []) for alert_id, found in rows}
    assert good <= set(flags), f"{len(good - set(flags))} good alerts have no row"
    for alert_id, poison in stored_poison.items():
        assert alert_id in flags, alert_id
        if poison.flag is not None:
            assert flags[alert_id] == [poison.flag], alert_id
    published = {m["alert_id"] for m in await read_topic(
        settings, topics.normalized, until=len(good) + len(stored_poison), timeout_s=60)}
    assert good | set(stored_poison) <= published
    assert len(flags) == len(good) + len(stored_poison), "a dead-lettered poison has a row"

    # Every other poison: in the DLQ with the stage, a reason and its original bytes.
    letters = await read_topic(settings, topics.dlq, until=len(dead_poison), timeout_s=60,
                               where=lambda m: m.get("topic") == topics.raw)
    by_offset: dict[int, list[dict[str, object]]] = {}
    for letter in letters:
        by_offset.setdefault(int(letter["offset"]), []).append(letter)
    assert set(by_offset) == set(dead_poison), "only the poison alerts are dead-lettered"
    for offset, (poison, value) in dead_poison.items():
        letter = by_offset[offset][0]
        assert letter["stage"] == "normalize" and letter["tenant_id"] == tenant
        assert poison.dead_letter and poison.dead_letter in str(letter["reason"]), (
            poison.kind, letter["reason"])
        original = str(letter["original"])
        kept = (base64.b64decode(original) if letter["original_encoding"] == "base64"
                else original.encode())
        assert kept == value[:len(kept)] and (kept == value or letter["original_truncated"])

    duplicates = sum(len(found) - 1 for found in by_offset.values())
    outcome: dict[str, object] = {
        "kinds": len(POISONS), "positions per kind": len(POSITIONS),
        "malformed neighbours": sum(p is MALFORMED for p, _ in dead_poison.values()),
        "batches": len(POISONS) * len(POSITIONS),
        "good alerts through normalize": len(good),
        "sanitized and stored": len(stored_poison),
        "dead-lettered": sum(p is not MALFORMED for p, _ in dead_poison.values()),
        "duplicate dead letters": duplicates, "partitions stalled": stalled,
        "first batch s (joins the group)": round(round_s[0], 2),
        "slowest other batch s": round(max(round_s[1:]), 2)}
    print(outcome)  # shown with -s; recorded by full-size runs
    report_row("poison-pill regression", outcome)
    report_figure("reliability.partitions_stalled", stalled, goal="0")
