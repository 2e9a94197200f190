"""A consumer whose position is past its partition's end starts over from the beginning.

That happens when the broker lost its log (an embedded broker on memory storage restarted,
or a topic was recreated): the group's committed offset, or the position the consumer
held, points past the new log's end. Kafka answers such a fetch with OFFSET_OUT_OF_RANGE
and `auto_offset_reset="earliest"` applies; Tansu answers with an empty batch, so the
consumer would wait there and skip everything written since. Redelivery is safe: every
stage's writes are idempotent.

The end is the high watermark of the consumer's own fetch responses: Tansu's ListOffsets
(`end_offsets`) answers the last batch's base offset + 1, not the log end, so it cannot
tell a lost log from a normal one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

log = structlog.get_logger(__name__)


async def rewind_past_end(consumer: AIOKafkaConsumer) -> list[TopicPartition]:
    """Seek to the beginning every assigned partition whose position is beyond the high
    watermark its last fetch reported; return those partitions."""
    rewound = []
    for tp in list(consumer.assignment()):
        try:
            end = consumer.highwater(tp)
            if end is None:
                continue  # not fetched yet
            position = await asyncio.wait_for(consumer.position(tp), 1.0)
        except (AssertionError, IllegalStateError, TimeoutError):
            continue  # revoked meanwhile, or no position yet: look again next round
        if position > end:
            log.warning("position_past_log_end", topic=tp.topic, partition=tp.partition,
                        position=position, log_end=end)
            await consumer.seek_to_beginning(tp)
            rewound.append(tp)
    return rewound


# aiokafka ships no type hints, so its base class is Any to mypy.
class LogEndGuard(ConsumerRebalanceListener):  # type: ignore[misc]
    """Once partitions are assigned, checks every `interval_s` for as long as the
    consumer runs. `consumer()` returns the running consumer (None once stopped)."""

    def __init__(self, consumer: Callable[[], AIOKafkaConsumer | None], *,
                 interval_s: float = 2.0) -> None:
        self._consumer = consumer
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while (consumer := self._consumer()) is not None:
            try:
                await rewind_past_end(consumer)
            except Exception as exc:  # a check never takes the consumer down
                log.warning("log_end_check_failed", error=repr(exc))
            await asyncio.sleep(self._interval_s)
