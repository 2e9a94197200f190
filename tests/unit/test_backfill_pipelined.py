"""The faster backfill keeps its guarantees: chunks in flight are checkpointed only in
order and only once acknowledged (a stop settles them all, a failure checkpoints none past
it), block reads find every line and its resume offset, and the bounded decoder's
bracket-count shortcut refuses exactly what the nesting walk refuses."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pipeline.analysis.safe_json import MAX_DEPTH, JSONRejected, loads_bounded, nesting_depth
from pipeline.sources.backfill import reader as reader_module
from pipeline.sources.backfill.checkpoint import CheckpointStore
from pipeline.sources.backfill.filters import AlertFilter
from pipeline.sources.backfill.ratelimit import TokenBucket
from pipeline.sources.backfill.reader import ArchiveReader, FileIdentity
from pipeline.sources.backfill.runner import Backfill
from tests.unit.recording_sink import RecordingSink


def archive(path: Path, n: int) -> Path:
    path.write_bytes(b"".join(json.dumps({"id": f"a-{i}", "rule": {"level": 5}}).encode()
                              + b"\n" for i in range(n)))
    return path


@dataclass
class SlowAckSink(RecordingSink):
    """Acknowledges each chunk after a delay, newest first (acknowledgements out of
    order); `fail_chunk` (0-based) is refused by the broker."""

    max_alert_bytes: int = 1 << 20
    fail_chunk: int | None = None
    calls: int = 0
    acknowledged: list[int] = field(default_factory=list)

    async def publish(self, tenant_id: str, alerts: Sequence[bytes]) -> None:
        index = self.calls
        self.calls += 1
        await asyncio.sleep(0.05 / (index + 1))
        if index == self.fail_chunk:
            raise ConnectionError("broker refused the chunk")
        self.acknowledged.append(index)
        await super().publish(tenant_id, alerts)

    def ids(self) -> list[str]:
        return [json.loads(v)["id"] for v in self.published]


def job(tmp_path: Path, sink: RecordingSink, stop: asyncio.Event | None = None) -> Backfill:
    return Backfill(sink, CheckpointStore(tmp_path / "cp"), tenant_id="acme",
                    alert_filter=AlertFilter(), bucket=TokenBucket(0), chunk_size=10,
                    stop=stop, max_in_flight=4)


def test_a_stop_settles_every_chunk_in_flight_and_resume_sends_each_alert_once(
        tmp_path: Path) -> None:
    path = archive(tmp_path / "a.json", 100)
    sink, stop = SlowAckSink(), asyncio.Event()

    class StopAfterThreeChunks:
        def advance(self, raw_bytes: int, alerts: int) -> None:
            if sink.calls >= 3:
                stop.set()

    first = asyncio.run(job(tmp_path, sink, stop).run([path], StopAfterThreeChunks()))
    assert first.interrupted
    # Everything sent before the stop was acknowledged and checkpointed: nothing pending.
    assert first.files[0].published == len(sink.published) == 30
    checkpoint = CheckpointStore(tmp_path / "cp").load(FileIdentity.of(path))
    assert (checkpoint.line, checkpoint.published) == (30, 30)
    asyncio.run(job(tmp_path, sink).run([path]))
    assert sorted(sink.ids()) == sorted(f"a-{i}" for i in range(100))  # once each


def test_no_checkpoint_passes_a_chunk_the_broker_refused(tmp_path: Path) -> None:
    path = archive(tmp_path / "a.json", 100)
    failing = SlowAckSink(fail_chunk=1)  # chunks 2, 3 are acknowledged before it fails
    with pytest.raises(ConnectionError):
        asyncio.run(job(tmp_path, failing).run([path]))
    assert {2, 3} <= set(failing.acknowledged)
    checkpoint = CheckpointStore(tmp_path / "cp").load(FileIdentity.of(path))
    assert (checkpoint.line, checkpoint.published) == (10, 10)
    resumed = SlowAckSink()
    asyncio.run(job(tmp_path, resumed).run([path]))
    # Nothing skipped, nothing twice (acknowledgements come out of order: sorted).
    assert sorted(resumed.ids(), key=lambda i: int(i[2:])) == [f"a-{i}" for i in range(10, 100)]


def test_block_reads_keep_long_lines_offsets_and_an_unterminated_last_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reader_module, "_BLOCK_BYTES", 64)  # lines span several blocks
    lines = [json.dumps({"id": f"a-{i}", "full_log": "x" * (i * 37)}).encode()
             for i in range(12)]
    path = tmp_path / "a.json"
    path.write_bytes(b"\n".join(lines[:6]) + b"\n\r\n\n" + b"\n".join(lines[6:]))
    reader = ArchiveReader(path)
    read = list(reader)
    assert [line.data for line in read] == lines
    assert [line.number for line in read] == [1, 2, 3, 4, 5, 6, 9, 10, 11, 12, 13, 14]
    assert reader.problem is not None and "line 14 has no line end" in reader.problem
    for cut in (3, 7):
        rest = list(ArchiveReader(path, start_line=read[cut].number,
                                  start_offset=read[cut].end_offset))
        assert [line.data for line in rest] == lines[cut + 1:]


def nested(rng: random.Random, depth: int) -> Any:
    """A chain `depth` levels deep of lists and objects, with scalar siblings."""
    value: Any = rng.choice([1, "[{", None, 2.5])
    for _ in range(depth):
        siblings = [rng.choice([1, "]}", [], {}]) for _ in range(rng.randrange(3))]
        value = [value, *siblings] if rng.random() < 0.5 else {
            "v": value, **{f"k{i}": s for i, s in enumerate(siblings)}}
    return value


def test_the_bracket_shortcut_refuses_exactly_what_the_nesting_walk_refuses() -> None:
    # Brackets inside strings only make the text take the walk: still accepted.
    shallow = {"full_log": "[{" * 200, "rule": {"groups": ["a"]}}
    assert loads_bounded(json.dumps(shallow)) == shallow
    rng = random.Random(3)
    for _ in range(200):
        value = nested(rng, rng.randrange(MAX_DEPTH - 3, MAX_DEPTH + 3))
        text = json.dumps(value)
        if nesting_depth(value) > MAX_DEPTH:
            with pytest.raises(JSONRejected) as refused:
                loads_bounded(text)
            assert refused.value.kind == "too_deep"
        else:
            assert loads_bounded(text) == value
