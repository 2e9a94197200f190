"""The subscription every stage uses: batches, manual commit after the stage's outputs are
published or written (see pipeline.kafka.messaging.run_batch), earliest offset for new groups.

Each stage subscribes twice (`subscribe_lanes`): its live topics with the group
`<prefix>-<stage>` and their batch twins with `<prefix>-<stage>-batch`, in small batches,
behind the worker's `LaneGate` (pipeline/kafka/lanes.py), so backfill never delays live alerts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Literal, cast

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.message import StreamMessage

from pipeline.config import Settings
from pipeline.kafka.lanes import LaneGate
from pipeline.kafka.log_end_guard import LogEndGuard
from pipeline.kafka.messaging import Backoff, Consumer, DeadLetterSink, Record, run_batch

Lane = Literal["live", "batch"]


def raw_records(msg: StreamMessage[Any]) -> Any:
    """The subscriber's decoder: the batch's records as they came, undecoded.

    FastStream's default decoder parses every value as JSON before the handler runs, and
    one value it cannot parse (nested too deep, say) fails the whole batch outside the
    stage's reach. The stages decode each record themselves, with bounds, and dead-letter
    the one that fails (pipeline/decoding.py)."""
    raw = msg.raw_message
    # aiokafka hands a batch over as a tuple, FastStream's TestKafkaBroker as a list.
    return tuple(raw) if isinstance(raw, tuple | list) else (raw,)


def with_utf8_headers(records: Any) -> Any:
    """The records with every header value valid UTF-8 (others replaced by U+FFFD, a null
    one empty). FastStream decodes header values strictly while it parses a batch: one
    bad header from any producer would fail the whole batch before the stage sees it."""
    def fixed(record: Any) -> Any:
        headers = record.headers or ()
        try:
            for _, value in headers:
                value.decode("utf-8")
        except (UnicodeDecodeError, AttributeError):
            return dataclasses.replace(record, headers=[
                (k, v.decode("utf-8", "replace").encode() if isinstance(v, bytes) else b"")
                for k, v in headers])
        return record

    return (tuple(fixed(r) for r in records) if isinstance(records, tuple | list)
            else fixed(records))


async def tolerant_parser(records: Any,
                          original: Callable[[Any], Awaitable[StreamMessage[Any]]]
                          ) -> StreamMessage[Any]:
    """The subscriber's parser: FastStream's own, after with_utf8_headers."""
    return await original(with_utf8_headers(records))


def _consumer(msg: KafkaMessage) -> Consumer:
    """The subscriber's AIOKafkaConsumer: FastStream types it as commit() and seek() only;
    run_batch commits the batch's partitions by name (commit(offsets), assignment())."""
    return cast(Consumer, msg.consumer)


def subscribe_stage(broker: KafkaBroker, settings: Settings, stage: str, topics: list[str],
                    handle: Callable[[list[Record]], Awaitable[None]], *,
                    dead_letter: DeadLetterSink,
                    max_records: int | None = None,
                    max_poll_interval_ms: int = 5 * 60 * 1000,
                    lane: Lane = "live", gate: LaneGate | None = None) -> None:
    if gate is not None and gate.max_wait_s * 1000 > max_poll_interval_ms / 2:
        # The batch subscriber does not poll while it waits at the gate.
        raise ValueError(f"{stage}: the batch lane's max wait ({gate.max_wait_s} s) must "
                         f"stay well under max_poll_interval ({max_poll_interval_ms} ms)")
    suffix = "" if lane == "live" else "-batch"
    backoff = Backoff()  # grows while this subscription's batches fail transiently

    # Starts over from the beginning when the broker lost the log (pipeline/kafka/log_end_guard.py).
    guard = LogEndGuard(lambda: subscriber.consumer)
    subscriber = broker.subscriber(
        *topics, group_id=f"{settings.kafka.group_prefix}-{stage}{suffix}", batch=True,
        max_records=max_records or settings.kafka.max_batch_records,
        ack_policy=AckPolicy.MANUAL, auto_offset_reset="earliest",
        max_poll_interval_ms=max_poll_interval_ms, title=f"{stage}{suffix}-consumer",
        # The batch lane waits longer: backfill is not latency-bound.
        fetch_max_wait_ms=(settings.kafka.fetch_max_wait_ms if lane == "live"
                           else settings.kafka.batch_lane.fetch_max_wait_ms),
        parser=tolerant_parser, decoder=raw_records, listener=guard)

    @subscriber
    async def consume(records: Any, msg: KafkaMessage) -> None:
        if gate is None:
            await run_batch(_consumer(msg), records, handle, dead_letter=dead_letter,
                            backoff=backoff, stage=stage, lane=lane)
            return
        turn = gate.live() if lane == "live" else gate.batch(stage)
        async with turn:
            await run_batch(_consumer(msg), records, handle, dead_letter=dead_letter,
                            backoff=backoff, stage=stage, lane=lane)


def subscribe_lanes(broker: KafkaBroker, settings: Settings, stage: str, gate: LaneGate, *,
                    live_topics: list[str], batch_topics: list[str],
                    handle: Callable[[list[Record]], Awaitable[None]],
                    dead_letter: DeadLetterSink,
                    max_records: int | None = None, batch_max_records: int | None = None,
                    max_poll_interval_ms: int = 5 * 60 * 1000) -> None:
    """The stage's live and batch subscribers, behind the worker's gate."""
    subscribe_stage(broker, settings, stage, live_topics, handle, dead_letter=dead_letter,
                    max_records=max_records,
                    max_poll_interval_ms=max_poll_interval_ms, lane="live", gate=gate)
    subscribe_stage(broker, settings, stage, batch_topics, handle, dead_letter=dead_letter,
                    max_records=batch_max_records or settings.kafka.batch_lane.max_records,
                    max_poll_interval_ms=max_poll_interval_ms, lane="batch", gate=gate)
