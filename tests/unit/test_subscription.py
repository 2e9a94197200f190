"""The subscriber's parser and decoder, on FastStream's own batch parser and aiokafka's
own records: no header and no value can fail a batch before the stage sees it."""

from __future__ import annotations

import pytest
from aiokafka.structs import ConsumerRecord
from faststream.kafka.message import KafkaAckableMessage
from faststream.kafka.parser import AioKafkaBatchParser

from consumers.subscription import raw_records, tolerant_parser
from pipeline.kafka.messaging import Record


def record(offset: int, value: bytes, headers: list[tuple[str, bytes]]) -> ConsumerRecord:
    return ConsumerRecord(topic="alerts.raw", partition=0, offset=offset, timestamp=0,
                          timestamp_type=0, key=None, value=value, checksum=None,
                          serialized_key_size=0, serialized_value_size=len(value),
                          headers=headers)


BATCH = (record(0, b'{"ok": 1}', [("tenant_id", b"acme")]),
         record(1, b"[" * 10_000 + b"]" * 10_000, [("tenant_id", b"\xff\xfe")]),
         record(2, b"\xffnot json", [("tenant_id", None)]),  # type: ignore[list-item]
         record(3, b'{"ok": 2}', []))


async def test_faststreams_own_parser_fails_the_whole_batch_on_one_bad_header() -> None:
    with pytest.raises((UnicodeDecodeError, AttributeError)):
        await AioKafkaBatchParser(KafkaAckableMessage, None).parse_message(BATCH)


async def test_every_record_reaches_the_stage_undecoded_and_in_order() -> None:
    parser = AioKafkaBatchParser(KafkaAckableMessage, None)
    message = await tolerant_parser(BATCH, parser.parse_message)
    records = [Record.from_consumer_record(r) for r in raw_records(message)]
    assert [r.offset for r in records] == [0, 1, 2, 3]
    assert [r.value for r in records] == [r.value for r in BATCH]  # bytes as produced
    assert [r.headers for r in records] == [{"tenant_id": "acme"}, {"tenant_id": "\ufffd\ufffd"},
                                            {"tenant_id": ""}, {}]
    assert raw_records(message)[0] is BATCH[0]  # a sound record is passed through as is
