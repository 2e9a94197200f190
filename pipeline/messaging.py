"""What the stages need from Kafka, as small protocols, plus the batch-commit discipline.

A stage gets a batch of records, publishes or writes its outputs, and only then are the
offsets committed. If anything escapes the stage, every partition in the batch is rewound
to its first record, so nothing is skipped; the batch is delivered again.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

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


def dead_letter(stage: str, record: Record, reason: str) -> DeadLetter:
    try:
        original, encoding = record.value.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        original, encoding = base64.b64encode(record.value).decode(), "base64"
    return DeadLetter(stage=stage, reason=reason, tenant_id=record.headers.get(TENANT_HEADER),
                      original=original, original_encoding=encoding,  # type: ignore[arg-type]
                      topic=record.topic, partition=record.partition, offset=record.offset)


class Consumer(Protocol):
    def seek(self, partition: Any, offset: int) -> None: ...
    async def commit(self) -> None: ...


async def run_batch(consumer: Consumer, raw_records: Sequence[Any],
                    handle: Callable[[list[Record]], Awaitable[None]], *,
                    retry_delay_s: float = 2.0) -> None:
    """Handle a batch, then commit; on failure rewind every partition of the batch."""
    from aiokafka import TopicPartition

    records = [Record.from_consumer_record(r) for r in raw_records]
    if not records:
        return
    try:
        await handle(records)
    except BaseException as exc:
        first: dict[tuple[str, int], int] = {}
        for r in records:
            first[(r.topic, r.partition)] = min(r.offset, first.get((r.topic, r.partition),
                                                                    r.offset))
        for (topic, partition), offset in first.items():
            consumer.seek(TopicPartition(topic, partition), offset)
        if isinstance(exc, Exception):
            log.exception("batch_failed_will_retry", records=len(records))
            await asyncio.sleep(retry_delay_s)  # do not spin on a broken dependency
        raise
    await consumer.commit()
