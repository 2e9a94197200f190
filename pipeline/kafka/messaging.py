"""What the stages need from Kafka, as small protocols, plus the batch-commit discipline.

A stage gets a batch of records, publishes or writes its outputs, and only then are the
offsets committed. A record that fails on its own is found by bisection and dead-lettered,
so one poison record never stalls a partition; an outage (a transient failure) rewinds
every partition of the batch and backs off, so nothing is skipped and no good record is
dead-lettered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Container, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from pipeline import telemetry, telemetry_metrics
from pipeline.kafka.transient import is_transient, schema_not_ready
from pipeline.store.migrate import MIGRATE_HINT
from schemas.messages import DeadLetter

log = structlog.get_logger(__name__)

TENANT_HEADER = "tenant_id"
ALERT_HEADER = "alert_id"
PRIORITY_HEADER = "priority"
SCHEMA_HEADER = "schema_version"


@dataclass(frozen=True)
class Record:
    """One consumed message, independent of the Kafka client."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]

    @classmethod
    def from_consumer_record(cls, record: Any) -> Record:
        headers = {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
                   for k, v in (record.headers or ())}
        return cls(topic=record.topic, partition=record.partition, offset=record.offset,
                   key=record.key, value=record.value or b"", headers=headers)


class Publisher(Protocol):
    async def publish(self, topic: str, value: bytes, *, key: str,
                      headers: dict[str, str]) -> None: ...


# The original bytes a dead letter carries: bounded, so the letter itself (JSON-escaped,
# up to 6 bytes a byte) always fits under the broker's message size. A longer original is
# cut; its size, sha256 and position on its topic say where the whole of it is.
ORIGINAL_LIMIT = 128 * 1024


def dead_letter(stage: str, record: Record, reason: str) -> DeadLetter:
    value, truncated = record.value, len(record.value) > ORIGINAL_LIMIT
    if truncated:
        value = value[:ORIGINAL_LIMIT]
        try:
            value.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data":  # cut inside a character
                value = value[:exc.start]
    try:
        original, encoding = value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        original, encoding = base64.b64encode(value).decode(), "base64"
    return DeadLetter(stage=stage, reason=reason, tenant_id=record.headers.get(TENANT_HEADER),
                      original=original, original_encoding=encoding,  # type: ignore[arg-type]
                      original_size=len(record.value), original_truncated=truncated,
                      original_sha256=hashlib.sha256(record.value).hexdigest()
                      if truncated else None,
                      topic=record.topic, partition=record.partition, offset=record.offset)


class Consumer(Protocol):
    def seek(self, partition: Any, offset: int) -> None: ...
    def assignment(self) -> Container[Any]: ...
    async def commit(self, offsets: dict[Any, int] | None = None) -> None: ...


DeadLetterSink = Callable[[Record, str], Awaitable[None]]
"""Sends one record to the dead-letter topic with a reason (the caller knows the topic)."""


class Backoff:
    """Capped exponential backoff with jitter, kept per subscription across redeliveries
    of a failing batch and reset by a success."""

    def __init__(self, *, initial_s: float = 0.5, cap_s: float = 30.0,
                 rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        base = min(self.cap_s, self.initial_s * 2.0 ** min(self.attempt, 32))
        self.attempt += 1
        # Jitter: consumers that failed together (an outage) do not retry in lockstep.
        return base / 2 + self._rng.uniform(0, base / 2)

    def reset(self) -> None:
        self.attempt = 0


class _Systemic(Exception):
    """Every record of a batch failed on its own: more likely the stage or a dependency
    than the records. Retried a few times before the records are dead-lettered."""


# How many times a batch whose every record fails on its own is retried (with backoff)
# before its records are dead-lettered anyway: bounded, or a batch made only of poison
# records would jam its partition.
SYSTEMIC_RETRIES = 3
REASON_LIMIT = 1000


async def run_batch(consumer: Consumer, raw_records: Sequence[Any],
                    handle: Callable[[list[Record]], Awaitable[None]], *,
                    dead_letter: DeadLetterSink | None = None,
                    backoff: Backoff | None = None,
                    stage: str | None = None, lane: str = "live") -> None:
    """Handle a batch, isolating the records that fail on their own, then commit.

    A failure that is not transient (pipeline.kafka.transient) splits the batch in halves,
    recursively, until the records that fail alone are found; they are dead-lettered with
    the error, every other record is handled, then the batch is committed. A transient
    failure rewinds every partition of the batch to its first record and backs off
    (capped, exponential); the batch is delivered again and nothing is dead-lettered.
    Without a `dead_letter` sink there is no isolation: every failure is retried.

    With a `stage` name the batch is measured (pipeline/telemetry_metrics.py) and, when a
    tracer provider is configured, each record gets a span (pipeline/telemetry.py).
    """
    records = [Record.from_consumer_record(r) for r in raw_records]
    if not records:
        return
    if stage is None:
        await _run_batch(consumer, records, handle, dead_letter, backoff or Backoff(), None)
        return
    started = time.perf_counter()
    count, token = telemetry_metrics.start_batch()
    committed = False
    try:
        with telemetry.batch_spans(stage, records, alert_header=ALERT_HEADER) as spans:
            committed = await _run_batch(consumer, records, handle, dead_letter,
                                         backoff or Backoff(), spans)
    finally:
        telemetry_metrics.end_batch(token)
        telemetry_metrics.observe_batch(stage, lane, records=len(records),
                                        dead_letters=count.dead_letters,
                                        seconds=time.perf_counter() - started,
                                        committed=committed)
    if committed:
        telemetry_metrics.observe_lag(stage, lane, consumer, _next_offsets(records))


def _next_offsets(records: list[Record]) -> list[tuple[str, int, int]]:
    """(topic, partition, offset after the batch's last record) of each partition."""
    last: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        last[key] = max(r.offset, last.get(key, r.offset))
    return [(topic, partition, offset + 1) for (topic, partition), offset in last.items()]


async def _run_batch(consumer: Consumer, records: list[Record],
                     handle: Callable[[list[Record]], Awaitable[None]],
                     dead_letter: DeadLetterSink | None, backoff: Backoff,
                     spans: telemetry.BatchSpans | None) -> bool:
    """run_batch's work; True once the batch is committed."""
    try:
        if dead_letter is None:
            await handle(records)
        else:
            poison: list[tuple[Record, str]] = []
            await _handle_isolating(records, handle, poison)
            if len(poison) == len(records) > 1 and backoff.attempt < SYSTEMIC_RETRIES:
                raise _Systemic(poison[0][1])
            for record, reason in poison:
                if spans is not None:
                    spans.failed(record, reason)
                with telemetry.record_context(record):  # the log line has its trace id
                    log.warning("record_dead_lettered", topic=record.topic,
                                partition=record.partition, offset=record.offset,
                                reason=reason)
                    await dead_letter(record, reason)
    except BaseException as exc:
        _rewind(consumer, records)
        if not isinstance(exc, Exception):
            raise  # cancelled: the batch is delivered again after the restart
        delay = backoff.next_delay()
        hint = MIGRATE_HINT if schema_not_ready(exc) else None
        log.warning("batch_failed_will_retry", records=len(records), attempt=backoff.attempt,
                    delay_s=round(delay, 2), error=_describe(exc),
                    systemic=isinstance(exc, _Systemic), **({"hint": hint} if hint else {}))
        await asyncio.sleep(delay)  # do not spin on a broken dependency
        return False
    backoff.reset()
    await _commit(consumer, records)
    return True


async def _commit(consumer: Consumer, records: list[Record]) -> None:
    """Commit the partitions the batch has records of, each after its last record.

    aiokafka's commit() without offsets commits every assigned partition: on the
    S3-backed embedded broker each is an object written, and a stage's batch often holds
    one partition of three (a storm: always) — issue 15. A partition revoked while the
    batch ran is left to its new owner, as commit() would."""
    from aiokafka import TopicPartition

    assigned = consumer.assignment()
    offsets = {tp: offset for topic, partition, offset in _next_offsets(records)
               if (tp := TopicPartition(topic, partition)) in assigned}
    if offsets:
        await consumer.commit(offsets)


async def _handle_isolating(records: list[Record],
                            handle: Callable[[list[Record]], Awaitable[None]],
                            poison: list[tuple[Record, str]]) -> None:
    """Handle `records`; on a non-transient failure bisect, collecting the records that
    fail alone into `poison`. A transient failure propagates."""
    try:
        await handle(records)
        return
    except Exception as exc:
        if is_transient(exc):
            raise
        if len(records) == 1:
            poison.append((records[0], _describe(exc)))
            return
        log.info("batch_failed_bisecting", records=len(records), error=_describe(exc))
    middle = len(records) // 2
    await _handle_isolating(records[:middle], handle, poison)
    await _handle_isolating(records[middle:], handle, poison)


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= REASON_LIMIT else text[:REASON_LIMIT] + " …"


def _rewind(consumer: Consumer, records: list[Record]) -> None:
    """Seek every partition of the batch back to its first record (FastStream's nack
    would rewind only the first record's partition and skip the others' records)."""
    from aiokafka import TopicPartition

    first: dict[tuple[str, int], int] = {}
    for r in records:
        key = (r.topic, r.partition)
        first[key] = min(r.offset, first.get(key, r.offset))
    for (topic, partition), offset in first.items():
        consumer.seek(TopicPartition(topic, partition), offset)
