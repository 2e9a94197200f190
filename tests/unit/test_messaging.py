"""run_batch: commit after success, bisection of poison records to the DLQ, backoff and
rewind (never a dead letter) on transient failures. A fake consumer (seek/commit only)."""

from __future__ import annotations

import random
from collections.abc import Container
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from aiokafka import TopicPartition
from psycopg import errors as pg_errors

from pipeline.kafka import messaging
from pipeline.kafka.messaging import (
    ORIGINAL_LIMIT,
    SYSTEMIC_RETRIES,
    Backoff,
    Record,
    dead_letter,
    run_batch,
)
from tests.log_recorder import LogRecorder
from tests.unit.stages.harness import AllPartitions


@dataclass
class FakeRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes = b"{}"
    headers: tuple[tuple[str, bytes], ...] = (("tenant_id", b"acme"),)


class RecordingConsumer:
    def __init__(self, assigned: Container[TopicPartition] = AllPartitions()) -> None:
        self.seeks: list[tuple[Any, int]] = []
        self.commits = 0
        self.committed: list[dict[Any, int]] = []
        self.assigned = assigned

    def seek(self, partition: Any, offset: int) -> None:
        self.seeks.append((partition, offset))

    def assignment(self) -> Container[TopicPartition]:
        return self.assigned

    async def commit(self, offsets: dict[Any, int] | None = None) -> None:
        assert offsets, "every commit names its partitions"
        self.commits += 1
        self.committed.append(dict(offsets))


class Letters:
    """The dead-letter sink the runner is given."""

    def __init__(self) -> None:
        self.sent: list[tuple[Record, str]] = []

    async def __call__(self, record: Record, reason: str) -> None:
        self.sent.append((record, reason))

    @property
    def offsets(self) -> list[int]:
        return sorted(r.offset for r, _ in self.sent)


def no_wait() -> Backoff:
    return Backoff(initial_s=0, cap_s=0)


class PoisonStage:
    """Fails the whole batch (like a database insert) when any poison value is in it;
    otherwise handles every record."""

    def __init__(self, error: Exception | None = None) -> None:
        self.handled: list[int] = []
        self.calls = 0
        self.error = error or pg_errors.UntranslatableCharacter(
            "unsupported Unicode escape sequence")

    async def __call__(self, records: list[Record]) -> None:
        self.calls += 1
        if any(r.value == b"poison" for r in records):
            raise self.error
        self.handled.extend(r.offset for r in records)


def batch(size: int, poison_at: tuple[int, ...] = (), partitions: int = 1) -> list[FakeRecord]:
    return [FakeRecord("alerts.raw", i % partitions, 100 + i,
                       value=b"poison" if i in poison_at else b'{"ok": %d}' % i)
            for i in range(size)]


BATCH = [FakeRecord("a", 0, 5), FakeRecord("a", 0, 6), FakeRecord("a", 1, 9)]


async def test_commit_only_after_the_stage_succeeds() -> None:
    consumer, seen, letters = RecordingConsumer(), [], Letters()

    async def handle(records: list[Record]) -> None:
        seen.extend(records)

    await run_batch(consumer, BATCH, handle, dead_letter=letters)
    assert consumer.commits == 1 and not consumer.seeks and not letters.sent
    assert seen[0].headers == {"tenant_id": "acme"}


async def test_commit_names_only_the_batchs_partitions_after_their_last_record() -> None:
    """Not every assigned partition (aiokafka's commit() without offsets): each is an
    object written on the S3-backed embedded broker. A partition revoked meanwhile is
    left to its new owner."""
    consumer = RecordingConsumer(assigned={TopicPartition("a", 0), TopicPartition("a", 1),
                                           TopicPartition("a", 2)})

    async def handle(records: list[Record]) -> None:
        pass

    await run_batch(consumer, BATCH, handle)
    assert consumer.committed == [{TopicPartition("a", 0): 7, TopicPartition("a", 1): 10}]
    consumer.assigned = {TopicPartition("a", 1)}
    await run_batch(consumer, BATCH, handle)
    assert consumer.committed[-1] == {TopicPartition("a", 1): 10}
    consumer.assigned = set()
    await run_batch(consumer, BATCH, handle)  # nothing of it is this consumer's any more
    assert consumer.commits == 2


@pytest.mark.parametrize("position", range(64))
async def test_bisection_finds_one_poison_among_64_in_any_position(position: int) -> None:
    consumer, letters, stage = RecordingConsumer(), Letters(), PoisonStage()
    records = batch(64, (position,), partitions=3)
    await run_batch(consumer, records, stage, dead_letter=letters, backoff=no_wait())
    assert letters.offsets == [100 + position]
    assert sorted(stage.handled) == [100 + i for i in range(64) if i != position]
    assert consumer.commits == 1 and not consumer.seeks
    record, reason = letters.sent[0]
    assert record.value == b"poison" and record.partition == position % 3
    assert reason.startswith("UntranslatableCharacter: unsupported Unicode escape")
    # log2(64) levels, two halves each: far fewer calls than one per record
    assert stage.calls <= 2 * 6 + 1


@pytest.mark.parametrize("poison_at", [(0, 63), (31, 32), (5, 6), (0, 1), (17, 50)])
async def test_two_poisons_are_both_found_and_only_they(poison_at: tuple[int, int]) -> None:
    consumer, letters, stage = RecordingConsumer(), Letters(), PoisonStage()
    await run_batch(consumer, batch(64, poison_at), stage, dead_letter=letters,
                    backoff=no_wait())
    assert letters.offsets == [100 + i for i in poison_at]
    assert sorted(stage.handled) == [100 + i for i in range(64) if i not in poison_at]
    assert consumer.commits == 1


@pytest.mark.parametrize("outage", [
    psycopg.OperationalError("connection refused"),
    ConnectionRefusedError(111, "Connect call failed"),
    TimeoutError(),
], ids=lambda e: type(e).__name__)
async def test_transient_failures_rewind_back_off_and_never_dead_letter(
        outage: Exception) -> None:
    consumer, letters = RecordingConsumer(), Letters()
    backoff = no_wait()
    down_for = 5
    handled: list[int] = []

    async def handle(records: list[Record]) -> None:
        nonlocal down_for
        if down_for:
            down_for -= 1
            raise outage
        handled.extend(r.offset for r in records)

    for attempt in range(1, 6):  # the batch is redelivered after each rewind
        await run_batch(consumer, BATCH, handle, dead_letter=letters, backoff=backoff)
        assert consumer.commits == 0 and backoff.attempt == attempt
        assert sorted((tp.partition, off) for tp, off in consumer.seeks[-2:]) == [(0, 5),
                                                                                   (1, 9)]
    await run_batch(consumer, BATCH, handle, dead_letter=letters, backoff=backoff)
    assert consumer.commits == 1 and backoff.attempt == 0  # a success resets the backoff
    assert not letters.sent and handled == [5, 6, 9]


async def test_an_outage_during_bisection_dead_letters_nothing() -> None:
    consumer, letters = RecordingConsumer(), Letters()
    calls = 0

    async def handle(records: list[Record]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise pg_errors.UntranslatableCharacter("bad text")
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    await run_batch(consumer, batch(8, (3,)), handle, dead_letter=letters, backoff=no_wait())
    assert not letters.sent and consumer.commits == 0 and consumer.seeks


async def test_a_neighbours_own_dead_letter_is_sent_despite_the_poison() -> None:
    """A stage that dead-letters malformed records itself, after its database write (as
    normalize does): the write fails for the poison, yet the neighbour's letter goes out."""
    consumer, runner_letters = RecordingConsumer(), Letters()
    stage_letters: list[int] = []
    stored: list[int] = []

    async def handle(records: list[Record]) -> None:
        good = [r for r in records if r.value != b"malformed"]
        if any(r.value == b"poison" for r in good):
            raise pg_errors.UntranslatableCharacter("\\u0000 cannot be converted to text")
        stored.extend(r.offset for r in good)
        stage_letters.extend(r.offset for r in records if r.value == b"malformed")

    records = batch(16, (9,))
    records[10] = FakeRecord("alerts.raw", 0, 110, value=b"malformed")
    await run_batch(consumer, records, handle, dead_letter=runner_letters, backoff=no_wait())
    assert stage_letters == [110]
    assert runner_letters.offsets == [109]
    assert sorted(stored) == [100 + i for i in range(16) if i not in (9, 10)]
    assert consumer.commits == 1


async def test_a_batch_failing_on_every_record_is_retried_before_it_is_dead_lettered() -> None:
    """Every record failing alone looks like a broken stage, not poison: retried (with
    backoff) a bounded number of times, then dead-lettered so the partition moves on."""
    consumer, letters, stage = RecordingConsumer(), Letters(), PoisonStage()
    backoff = no_wait()
    records = batch(2, (0, 1))
    for _ in range(SYSTEMIC_RETRIES):
        await run_batch(consumer, records, stage, dead_letter=letters, backoff=backoff)
        assert not letters.sent and consumer.commits == 0
    await run_batch(consumer, records, stage, dead_letter=letters, backoff=backoff)
    assert letters.offsets == [100, 101] and consumer.commits == 1


async def test_a_missing_table_is_waited_out_however_long_not_dead_lettered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A deploy ahead of its migration (relation "alerts" does not exist) is no record's
    fault: the batch is rewound and retried past SYSTEMIC_RETRIES, nothing dead-lettered,
    until the table exists."""
    consumer, letters = RecordingConsumer(), Letters()
    stage = PoisonStage(pg_errors.UndefinedTable('relation "alerts" does not exist'))
    records = [FakeRecord("alerts.raw", 0, 100 + i, value=b"poison") for i in range(4)]
    backoff = no_wait()
    logs = LogRecorder()
    monkeypatch.setattr(messaging, "log", logs)
    for _ in range(SYSTEMIC_RETRIES + 3):
        await run_batch(consumer, records, stage, dead_letter=letters, backoff=backoff)
    retries = [e for e in logs.events if e["event"] == "batch_failed_will_retry"]
    assert len(retries) == SYSTEMIC_RETRIES + 3
    assert all("secanalyst db migrate" in e["hint"] for e in retries)
    assert not letters.sent and consumer.commits == 0 and consumer.seeks
    assert stage.calls == SYSTEMIC_RETRIES + 3  # no bisection: the batch as a whole
    migrated = [FakeRecord("alerts.raw", 0, 100 + i) for i in range(4)]
    await run_batch(consumer, migrated, stage, dead_letter=letters, backoff=backoff)
    assert stage.handled == [100, 101, 102, 103] and consumer.commits == 1


async def test_without_a_sink_every_failure_is_retried() -> None:
    consumer, stage = RecordingConsumer(), PoisonStage()
    await run_batch(consumer, batch(4, (2,)), stage, backoff=no_wait())
    assert consumer.commits == 0 and consumer.seeks and not stage.handled


async def test_a_failing_dead_letter_send_rewinds_instead_of_skipping() -> None:
    consumer, stage = RecordingConsumer(), PoisonStage()

    async def broken_sink(record: Record, reason: str) -> None:
        raise ConnectionError("broker went away")

    await run_batch(consumer, batch(4, (2,)), stage, dead_letter=broken_sink,
                    backoff=no_wait())
    assert consumer.commits == 0 and consumer.seeks


def test_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(initial_s=0.5, cap_s=30.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(12)]
    for attempt, delay in enumerate(delays):
        base = min(30.0, 0.5 * 2 ** attempt)
        assert base / 2 <= delay <= base
    assert max(delays) <= 30.0 and delays[-1] >= 15.0
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_dead_letter_keeps_original_bytes() -> None:
    record = Record("alerts.raw", 2, 7, None, b"\xffnot json", {"tenant_id": "acme"})
    letter = dead_letter("normalize", record, "not valid JSON")
    assert letter.original_encoding == "base64" and letter.tenant_id == "acme"
    assert (letter.partition, letter.offset, letter.reason) == (2, 7, "not valid JSON")
    assert letter.original_size == 9 and not letter.original_truncated


def test_an_oversized_original_is_cut_on_a_character_boundary_with_its_hash() -> None:
    value = "é".encode() * ORIGINAL_LIMIT  # 2 bytes a character: the cut falls inside one
    letter = dead_letter("normalize", Record("alerts.raw", 0, 1, None, value, {}), "too big")
    assert letter.original_truncated and letter.original_size == len(value)
    assert letter.original_encoding == "utf-8" and set(letter.original) == {"é"}
    assert len(letter.original.encode()) <= ORIGINAL_LIMIT and letter.original_sha256
