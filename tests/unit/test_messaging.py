from dataclasses import dataclass
from typing import Any

import pytest

from pipeline.messaging import Record, dead_letter, run_batch


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes = b"{}"
    headers: tuple[tuple[str, bytes], ...] = (("tenant_id", b"acme"),)


class RecordingConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[Any, int]] = []
        self.commits = 0

    def seek(self, partition: Any, offset: int) -> None:
        self.seeks.append((partition, offset))

    async def commit(self) -> None:
        self.commits += 1


BATCH = [FakeRecord("a", 0, 5), FakeRecord("a", 0, 6), FakeRecord("a", 1, 9)]


async def test_commit_only_after_the_stage_succeeds() -> None:
    consumer, seen = RecordingConsumer(), []

    async def handle(records: list[Record]) -> None:
        seen.extend(records)

    await run_batch(consumer, BATCH, handle)
    assert consumer.commits == 1 and not consumer.seeks
    assert seen[0].headers == {"tenant_id": "acme"}


async def test_failure_rewinds_every_partition_to_its_first_record() -> None:
    consumer = RecordingConsumer()

    async def handle(records: list[Record]) -> None:
        raise ConnectionError("database went away")

    with pytest.raises(ConnectionError):
        await run_batch(consumer, BATCH, handle, retry_delay_s=0)
    assert consumer.commits == 0
    assert sorted((tp.partition, off) for tp, off in consumer.seeks) == [(0, 5), (1, 9)]


def test_dead_letter_keeps_original_bytes() -> None:
    record = Record("alerts.raw", 2, 7, None, b"\xffnot json", {"tenant_id": "acme"})
    letter = dead_letter("normalize", record, "not valid JSON")
    assert letter.original_encoding == "base64" and letter.tenant_id == "acme"
    assert (letter.partition, letter.offset, letter.reason) == (2, 7, "not valid JSON")
