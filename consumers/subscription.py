"""The subscription every stage uses: batches, manual commit after the stage's outputs are
published or written (see pipeline.messaging.run_batch), earliest offset for new groups."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage

from pipeline.config import Settings
from pipeline.messaging import Record, run_batch


def subscribe_stage(broker: KafkaBroker, settings: Settings, stage: str, topics: list[str],
                    handle: Callable[[list[Record]], Awaitable[None]], *,
                    max_records: int | None = None,
                    max_poll_interval_ms: int = 5 * 60 * 1000) -> None:
    @broker.subscriber(
        *topics, group_id=f"{settings.kafka.group_prefix}-{stage}", batch=True,
        max_records=max_records or settings.kafka.max_batch_records,
        ack_policy=AckPolicy.MANUAL, auto_offset_reset="earliest",
        max_poll_interval_ms=max_poll_interval_ms, title=f"{stage}-consumer")
    async def consume(body: Any, msg: KafkaMessage) -> None:
        records = msg.raw_message if isinstance(msg.raw_message, tuple) else (msg.raw_message,)
        await run_batch(msg.consumer, records, handle)
