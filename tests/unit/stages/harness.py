"""An in-memory FastStream run of one consumer module (consumers/*.py), for the stage tests.

What is real: the consumer's own `register` (its topics, groups, batch subscriber, raw-record
decoder, lane gate), the stage's code, `run_batch` (isolation, rewind, commit), the
worker's `BrokerPublisher` over FastStream's broker, and FastStream's message path
(TestKafkaBroker: publish → subscriber → handler, all in process).

What is faked, at the function boundary of the runtime's resources (pipeline/runtime.py),
each by the smallest stand-in that still lets the stage's own code run:
- the pool: hands out a connection that runs no SQL (`NoSqlPool`); the store functions
  that would use it are replaced in the stage's module by `Tables` methods that keep rows
  in a dict and journal each write;
- the consumer run_batch commits on: TestKafkaBroker starts no consumer (the parser keeps
  FastStream's no-op FAKE_CONSUMER), so `RecordingConsumer` is handed to each subscriber's
  parser the way FastStream's own `start()` does (`parser._setup(consumer)`), and
  journals each commit and seek.

The journal puts publishes, writes, commits and seeks in one order, so a test reads
"published, then committed" straight from it.

What TestKafkaBroker (faststream 0.6.7, faststream/kafka/testing.py) does not do, so these
tests do not test it:
- no consumer and no poll loop: `publish`/`publish_batch` call the subscriber's
  `process_message` directly, so `max_records`, the poll timeout and getmany's grouping
  by partition are not exercised; a batch is what one `publish_batch` sent, handed over
  as a list (aiokafka hands a tuple; consumers.subscription.raw_records takes both);
- every record is offset 0 of partition 0, with `content-type` and `correlation_id`
  headers added, so a rewind shows as `seek(topic, 0, 0)`;
- manual commit and seek are no-ops on FastStream's FAKE_CONSUMER (hence the
  RecordingConsumer) and nothing is redelivered after a rewind: redelivery, consumer
  groups, rebalances (the LogEndGuard listener) and lag are the real broker's, tested in
  tests/integration and tests/reliability.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from faststream.kafka import KafkaBroker, TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage
from psycopg_pool import AsyncConnectionPool

from consumers.subscription import raw_records
from pipeline.config import Settings
from pipeline.kafka.lanes import LaneGate
from pipeline.kafka.messaging import (
    ALERT_HEADER,
    PRIORITY_HEADER,
    SCHEMA_HEADER,
    TENANT_HEADER,
    Publisher,
)
from pipeline.runtime import Runtime
from pipeline.worker import BrokerPublisher
from schemas.messages import SCHEMA_VERSION, NormalizedAlert

InMemory = AbstractAsyncContextManager[KafkaBroker]
"""What a test's `wired(...)` returns: `async with` it to run the consumer in memory."""

# The headers every stage output carries (pipeline/stages/common.py headers_for).
STAGE_HEADERS = (TENANT_HEADER, ALERT_HEADER, PRIORITY_HEADER, SCHEMA_HEADER)


@dataclass(frozen=True)
class Delivered:
    """One message as the next topic's subscriber received it."""

    topic: str
    key: bytes | None
    value: bytes
    headers: dict[str, str]


@dataclass
class Journal:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    delivered: list[Delivered] = field(default_factory=list)

    def on(self, topic: str) -> list[Delivered]:
        return [d for d in self.delivered if d.topic == topic]

    def kinds(self) -> list[str]:
        return [event[0] for event in self.events]

    def committed_after_all_output(self) -> bool:
        """One commit, and nothing published or written after it."""
        kinds = self.kinds()
        return kinds.count("commit") == 1 and kinds[-1] == "commit"


class AllPartitions:
    """An assignment holding every partition."""

    def __contains__(self, tp: object) -> bool:
        return True


class RecordingConsumer:
    """What run_batch calls on aiokafka's consumer: commit and seek, journaled."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def assignment(self) -> AllPartitions:
        return AllPartitions()

    async def commit(self, offsets: dict[Any, int] | None = None) -> None:
        self.journal.events.append(("commit",))

    def seek(self, partition: Any, offset: int) -> None:
        self.journal.events.append(("seek", partition.topic, partition.partition, offset))


class NoSqlConnection:
    """The connection the faked store functions receive and ignore."""

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def rollback(self) -> None:
        return None


class NoSqlPool:
    @asynccontextmanager
    async def connection(self) -> AsyncIterator[NoSqlConnection]:
        yield NoSqlConnection()


def capture(broker: KafkaBroker, journal: Journal, *topics: str) -> None:
    """A subscriber on each topic that journals what reaches it (key, headers, bytes)."""
    for topic in topics:
        async def received(record: Any, msg: KafkaMessage) -> None:
            (raw,) = record
            headers = {k: v.decode() for k, v in raw.headers}
            journal.delivered.append(Delivered(raw.topic, raw.key, raw.value, headers))
            journal.events.append(("publish", raw.topic))

        broker.subscriber(topic, group_id=f"capture-{topic}", decoder=raw_records)(received)


@asynccontextmanager
async def in_memory(broker: KafkaBroker, journal: Journal) -> AsyncIterator[KafkaBroker]:
    """The broker under TestKafkaBroker, each subscriber committing on a RecordingConsumer."""
    async with TestKafkaBroker(broker) as test_broker:
        consumer = RecordingConsumer(journal)
        for subscriber in broker.subscribers:
            subscriber.parser._setup(consumer)  # type: ignore[attr-defined]
        yield test_broker


def new_broker() -> tuple[KafkaBroker, BrokerPublisher]:
    """A broker that never connects (TestKafkaBroker patches it) and the stages' publisher."""
    broker = KafkaBroker("in-memory:9092")
    return broker, BrokerPublisher(broker)


def stage_headers(delivered: Delivered) -> dict[str, str]:
    return {k: v for k, v in delivered.headers.items() if k in STAGE_HEADERS}


def headers_of(alert: NormalizedAlert) -> dict[str, str]:
    """The headers a stage output about `alert` must carry (tracing off)."""
    return {TENANT_HEADER: alert.tenant_id, ALERT_HEADER: alert.alert_id,
            PRIORITY_HEADER: alert.priority, SCHEMA_HEADER: str(SCHEMA_VERSION)}


# Each stage's (input, output) topics per lane, as names of pipeline.config.Topics.
LANES = {"normalize": {"live": ("raw", "normalized"), "batch": ("backfill", "normalized_batch")},
         "embed": {"live": ("normalized", "embedded"),
                   "batch": ("normalized_batch", "embedded_batch")},
         "retrieve": {"live": ("embedded", "enriched"),
                      "batch": ("embedded_batch", "enriched_batch")},
         "explain": {"live": ("enriched", "verdicts"), "batch": ("enriched_batch", "verdicts")}}


def lane_topics(settings: Settings, stage: str, lane: str) -> tuple[str, str]:
    """(topic the stage reads, topic it writes) in `lane`."""
    source, output = LANES[stage][lane]
    topics = settings.kafka.topics
    return getattr(topics, source), getattr(topics, output)


Registrar = Callable[[KafkaBroker, Runtime, Publisher, LaneGate], None]


@dataclass(frozen=True)
class StageUnderTest:
    """A consumer module (its stage name and `register`) run on an in-memory broker."""

    stage: str
    register: Registrar

    def wired(self, settings: Settings, gate: LaneGate, journal: Journal,
              **resources: Any) -> InMemory:
        """`register` on a fresh broker: the Runtime's pool runs no SQL, its other resources
        (embedder, router) are the given stand-ins; what reaches the stage's output topics
        and the DLQ is journaled."""
        broker, publisher = new_broker()
        runtime = Runtime(settings=settings, pool=cast(AsyncConnectionPool, NoSqlPool()),
                          **resources)
        self.register(broker, runtime, publisher, gate)
        outputs = {lane_topics(settings, self.stage, lane)[1] for lane in LANES[self.stage]}
        capture(broker, journal, *sorted(outputs), settings.kafka.topics.dlq)
        return in_memory(broker, journal)

    async def through_lane(self, settings: Settings, gate: LaneGate, journal: Journal,
                           lane: str, value: bytes, alert: NormalizedAlert,
                           **resources: Any) -> Delivered:
        """Publish `value` on the stage's input topic of `lane`; return the one message on
        its output topic of that lane, checked for what every stage keeps: keyed by
        tenant + fingerprint, with the stage headers of `alert`."""
        source, output = lane_topics(settings, self.stage, lane)
        async with self.wired(settings, gate, journal, **resources) as broker:
            await broker.publish(value, source, headers={TENANT_HEADER: alert.tenant_id})
        (out,) = journal.on(output)
        assert out.key == f"{alert.tenant_id}:{alert.fingerprint}".encode()
        assert stage_headers(out) == headers_of(alert)
        return out

    async def assert_rewound(self, settings: Settings, gate: LaneGate, journal: Journal,
                             values: list[bytes], tenant_id: str) -> None:
        """Publish `values` as one batch on the live input topic, while the stage's
        dependency is down: the batch is rewound to its first record, and nothing is
        published, dead-lettered or committed."""
        source, _ = lane_topics(settings, self.stage, "live")
        async with self.wired(settings, gate, journal) as broker:
            await broker.publish_batch(*values, topic=source,
                                       headers={TENANT_HEADER: tenant_id})
        assert journal.events == [("seek", source, 0, 0)]
