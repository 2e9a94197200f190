"""consumers/normalize.py through FastStream's TestKafkaBroker: a raw Wazuh alert in →
stored, then the normalized alert on the next topic of its lane (keyed by tenant +
fingerprint, the stage's headers), then the offset committed; a malformed alert and an
alert the database refuses on its own go to the DLQ with their reason and original bytes
while the rest go on; an outage rewinds the batch and commits nothing.

TestKafkaBroker hands a batch subscriber the published records in one call (offset 0,
partition 0 each) and never redelivers: the rewind is checked as the seek run_batch makes,
not as a second delivery (that is tests/integration's real broker)."""

from __future__ import annotations

import json

import psycopg
import pytest
from aiokafka import ConsumerRecord
from faststream.kafka.subscriber.usecase import BatchSubscriber

from consumers import normalize as normalize_consumer
from pipeline.config import Settings
from pipeline.kafka.lanes import LaneGate
from schemas.messages import NormalizedAlert
from tests.unit.stages import harness
from tests.unit.stages.conftest import SAMPLES, TENANT, normalized


class AlertsTable:
    """`upsert_alerts` at its boundary: rows by (tenant, alert id), each write journaled.
    `refused` alert ids fail as a value the database rejects; `down` fails every write as
    a lost connection does."""

    def __init__(self, journal: harness.Journal) -> None:
        self.journal = journal
        self.rows: dict[tuple[str, str], NormalizedAlert] = {}
        self.refused: set[str] = set()
        self.down = False

    async def upsert(self, conn: object, alert: NormalizedAlert) -> None:
        if self.down:
            raise psycopg.OperationalError("connection to server lost")
        if alert.alert_id in self.refused:
            raise psycopg.errors.DataError("value too long for type character varying(64)")
        self.rows[(alert.tenant_id, alert.alert_id)] = alert
        self.journal.events.append(("write", alert.alert_id))

    async def upsert_many(self, conn: object, alerts: list[NormalizedAlert]) -> None:
        # One statement for the batch: a refused row fails it whole, as in PostgreSQL.
        for alert in alerts:
            if alert.alert_id in self.refused:
                raise psycopg.errors.DataError("value too long for type character varying(64)")
        for alert in alerts:
            await self.upsert(conn, alert)


@pytest.fixture
def table(journal: harness.Journal, monkeypatch: pytest.MonkeyPatch) -> AlertsTable:
    table = AlertsTable(journal)
    monkeypatch.setattr("pipeline.stages.normalize.upsert_alerts", table.upsert_many)
    return table


STAGE = harness.StageUnderTest("normalize", normalize_consumer.register)


async def test_alert_stored_then_published_on_its_lane_then_committed(
        settings: Settings, gate: LaneGate, journal: harness.Journal, table: AlertsTable,
        lane: str) -> None:
    expected = normalized(0, priority=lane)
    out = await STAGE.through_lane(settings, gate, journal, lane, SAMPLES[0], expected)
    assert NormalizedAlert.model_validate_json(out.value) == expected.model_copy(
        update={"original_b64": None})  # the original bytes stay in the alerts row
    assert (TENANT, expected.alert_id) in table.rows
    assert journal.kinds() == ["write", "publish", "commit"]


async def test_a_malformed_alert_is_dead_lettered_with_reason_and_bytes(
        settings: Settings, gate: LaneGate, journal: harness.Journal, table: AlertsTable) -> None:
    topics = settings.kafka.topics
    bad = b'{"rule": "not a wazuh alert"'
    async with STAGE.wired(settings, gate, journal) as broker:
        await broker.publish_batch(SAMPLES[0], bad, SAMPLES[1], topic=topics.raw,
                                   headers={"tenant_id": TENANT})
    (letter_message,) = journal.on(topics.dlq)
    letter = json.loads(letter_message.value)
    assert letter["stage"] == "normalize" and letter["reason"]
    assert letter["original"].encode() == bad and letter["tenant_id"] == TENANT
    assert letter_message.headers["dlq_stage"] == "normalize"
    assert letter_message.key == TENANT.encode()
    assert len(journal.on(topics.normalized)) == 2  # the good alerts still go on
    assert journal.committed_after_all_output()


async def test_an_alert_the_database_refuses_alone_is_isolated(
        settings: Settings, gate: LaneGate, journal: harness.Journal, table: AlertsTable) -> None:
    topics = settings.kafka.topics
    table.refused.add(normalized(1).alert_id)
    async with STAGE.wired(settings, gate, journal) as broker:
        await broker.publish_batch(*SAMPLES[:4], topic=topics.raw,
                                   headers={"tenant_id": TENANT})
    (letter_message,) = journal.on(topics.dlq)
    letter = json.loads(letter_message.value)
    assert letter["reason"].startswith("DataError: value too long")
    assert letter["original"].encode() == SAMPLES[1]
    published = {NormalizedAlert.model_validate_json(d.value).alert_id
                 for d in journal.on(topics.normalized)}
    assert published == {normalized(i).alert_id for i in (0, 2, 3)}
    assert journal.committed_after_all_output()


async def test_an_outage_rewinds_the_batch_and_commits_nothing(
        settings: Settings, gate: LaneGate, journal: harness.Journal, table: AlertsTable) -> None:
    table.down = True
    await STAGE.assert_rewound(settings, gate, journal, SAMPLES[:3], TENANT)


async def test_a_header_that_is_not_utf8_does_not_fail_the_batch(
        settings: Settings, gate: LaneGate, journal: harness.Journal, table: AlertsTable) -> None:
    """aiokafka's records as the consumer hands them over (a tuple): TestKafkaBroker's
    publish can only send str headers, so the batch goes to the subscriber directly."""
    topics = settings.kafka.topics

    def record(offset: int, value: bytes, tenant: bytes) -> ConsumerRecord[bytes, bytes]:
        return ConsumerRecord(topic=topics.raw, partition=0, offset=offset, timestamp=0,
                              timestamp_type=0, key=None, value=value, checksum=None,
                              serialized_key_size=0, serialized_value_size=len(value),
                              headers=[("tenant_id", tenant)])

    async with STAGE.wired(settings, gate, journal) as broker:
        (live,) = [s for s in broker.subscribers
                   if isinstance(s, BatchSubscriber) and topics.raw in s.topics]
        await live.process_message((record(0, SAMPLES[0], TENANT.encode()),
                                    record(1, SAMPLES[1], b"\xff\xfe")))
    tenants = sorted(NormalizedAlert.model_validate_json(d.value).tenant_id
                     for d in journal.on(topics.normalized))
    assert tenants == [TENANT, "\ufffd\ufffd"]  # replaced, not a failed batch
    assert journal.committed_after_all_output()
