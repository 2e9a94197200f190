"""consumers/writeback.py through FastStream's TestKafkaBroker, writing to a real Unix
datagram socket standing for the Wazuh manager's queue: the verdicts of opted-in tenants
are written, then the offset is committed; a verdict that fails on its own is
dead-lettered (reason + original bytes) and the others are still written; a manager that
cannot be reached rewinds the batch, dead-letters nothing and commits nothing.

The socket is real; `JournaledQueue` only journals each send before making it, so the
order "written, then committed" can be read."""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from faststream.kafka.subscriber.usecase import BatchSubscriber

from consumers import writeback
from pipeline.config import IngestSettings, Settings
from pipeline.kafka.transient import is_transient
from pipeline.sources.writeback import ManagerUnreachable, QueueSocket
from tests.unit.stages import harness

VERDICT = {"tenant_id": "acme", "alert_id": "1.2", "rule_id": "5710", "rule_level": 5,
           "severity": "medium", "status": "explained", "summary": "password guessing",
           "attack": [{"id": "T1110"}], "next_steps": ["lastb -i"]}


class JournaledQueue(QueueSocket):
    def __init__(self, path: Path, journal: harness.Journal) -> None:
        super().__init__(path)
        self.journal = journal

    def send(self, message: bytes) -> None:
        self.journal.events.append(("write", json.loads(message.split(b":", 2)[2])
                                    ["secanalyst"]["alert_id"]))
        super().send(message)


@pytest.fixture
def socket_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="wq") as folder:  # short: AF_UNIX path limit
        yield Path(folder) / "queue"


@pytest.fixture
def manager(socket_path: Path) -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(socket_path))
    server.setblocking(False)
    yield server
    server.close()


def received(server: socket.socket) -> list[dict[str, object]]:
    found = []
    while True:
        try:
            found.append(json.loads(server.recv(65536).split(b":", 2)[2])["secanalyst"])
        except BlockingIOError:
            return found


def opted_in(settings: Settings) -> Settings:
    return settings.model_copy(update={"ingest": IngestSettings(writeback_tenants=["acme"])})


def wired(settings: Settings, journal: harness.Journal, socket_path: Path) -> harness.InMemory:
    broker, publisher = harness.new_broker()
    writeback.register(broker, opted_in(settings), JournaledQueue(socket_path, journal),
                       publisher)
    harness.capture(broker, journal, settings.kafka.topics.dlq)
    return harness.in_memory(broker, journal)


def verdict(**fields: object) -> bytes:
    return json.dumps({**VERDICT, **fields}).encode()


def test_it_reads_the_verdicts_topic_in_the_group_it_always_had(settings: Settings) -> None:
    broker, publisher = harness.new_broker()
    writeback.register(broker, opted_in(settings), QueueSocket(Path("unused")), publisher)
    (subscriber,) = broker.subscribers
    assert isinstance(subscriber, BatchSubscriber)  # raw batches, as the stages
    assert subscriber.topics == [settings.kafka.topics.verdicts]
    assert subscriber.group_id == f"{settings.kafka.group_prefix}-wazuh-writeback"
    with pytest.raises(ValueError, match="writeback_tenants"):
        writeback.register(broker, settings, QueueSocket(Path("unused")), publisher)


async def test_opted_in_verdicts_are_written_then_committed(
        settings: Settings, journal: harness.Journal, socket_path: Path,
        manager: socket.socket) -> None:
    async with wired(settings, journal, socket_path) as broker:
        await broker.publish_batch(verdict(alert_id="1.1"), verdict(tenant_id="globex"),
                                   verdict(alert_id="1.3"),
                                   topic=settings.kafka.topics.verdicts)
    assert [(m["tenant_id"], m["alert_id"]) for m in received(manager)] == [
        ("acme", "1.1"), ("acme", "1.3")]
    assert journal.events == [("write", "1.1"), ("write", "1.3"), ("commit",)]


async def test_a_verdict_that_fails_alone_is_dead_lettered_the_rest_written(
        settings: Settings, journal: harness.Journal, socket_path: Path,
        manager: socket.socket) -> None:
    topics = settings.kafka.topics
    broken = verdict(alert_id="1.2", attack=5)  # not a list: the event cannot be built
    async with wired(settings, journal, socket_path) as broker:
        await broker.publish_batch(verdict(alert_id="1.1"), broken, verdict(alert_id="1.3"),
                                   topic=topics.verdicts)
    # 1.1 is written again while the batch is bisected: at least once, as Kafka is.
    assert {m["alert_id"] for m in received(manager)} == {"1.1", "1.3"}
    (letter_message,) = journal.on(topics.dlq)
    letter = json.loads(letter_message.value)
    assert letter["stage"] == "wazuh-writeback" and letter["reason"].startswith("TypeError")
    assert letter["original"].encode() == broken
    assert journal.committed_after_all_output()


async def test_an_unreachable_manager_rewinds_and_commits_nothing(
        settings: Settings, journal: harness.Journal, socket_path: Path) -> None:
    topics = settings.kafka.topics
    async with wired(settings, journal, socket_path) as broker:  # no manager bound
        await broker.publish_batch(verdict(alert_id="1.1"), verdict(alert_id="1.3"),
                                   topic=topics.verdicts)
    assert journal.kinds() == ["write", "seek"]  # tried, then rewound: no letter, no commit
    assert journal.events[-1] == ("seek", topics.verdicts, 0, 0)
    with pytest.raises(ManagerUnreachable) as raised:
        QueueSocket(socket_path).send(b"x")
    assert is_transient(raised.value)
