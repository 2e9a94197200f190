"""Backfill without services: reading archives (plain, gzip, folders, truncated), filters,
checkpoint/resume with exactly one publish per alert, verdict pre-skip, the estimate and
the token bucket."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import ModelPrice, Settings, UsageSettings
from pipeline.sources.backfill.checkpoint import Checkpoint, CheckpointStore
from pipeline.sources.backfill.estimate import Estimate, TokensPerVerdict, count_alerts, price
from pipeline.sources.backfill.filters import AlertFilter, parse_line
from pipeline.sources.backfill.ratelimit import TokenBucket
from pipeline.sources.backfill.reader import (
    ArchiveNotFound,
    ArchiveReader,
    FileIdentity,
    archive_files,
)
from pipeline.sources.backfill.runner import Backfill
from tests.unit.recording_sink import RecordingSink

SAMPLES = Path(__file__).parents[2] / "samples" / "wazuh-alerts.jsonl"


def alerts(n: int, **rule: Any) -> list[dict[str, Any]]:
    base = [json.loads(line) for line in SAMPLES.read_text().splitlines()]
    out = []
    for i in range(n):
        alert = {**base[i % len(base)], "id": f"a-{i}"}
        if rule:
            alert["rule"] = {**alert["rule"], **rule}
        out.append(alert)
    return out


def write(path: Path, docs: Sequence[dict[str, Any] | bytes], *, compress: bool = False) -> Path:
    data = b"".join((d if isinstance(d, bytes) else json.dumps(d).encode()) + b"\n"
                    for d in docs)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@dataclass
class Sink(RecordingSink):
    fail_after: int | None = None
    tenants: set[str] = field(default_factory=set)

    async def publish(self, tenant_id: str, alerts: Sequence[bytes]) -> None:
        if self.fail_after is not None and len(self.published) >= self.fail_after:
            raise ConnectionError("broker gone")
        self.tenants.add(tenant_id)
        await super().publish(tenant_id, alerts)

    def ids(self) -> list[str]:
        return [json.loads(v)["id"] for v in self.published]


def job(tmp_path: Path, sink: Sink, *, chunk: int = 4, stop: asyncio.Event | None = None,
        alert_filter: AlertFilter | None = None, existing: set[str] | None = None,
        ) -> Backfill:
    async def lookup(tenant: str, ids: Sequence[str]) -> set[str]:
        return {i for i in ids if i in (existing or set())}

    return Backfill(sink, CheckpointStore(tmp_path / "cp"), tenant_id="acme",
                    alert_filter=alert_filter or AlertFilter(), bucket=TokenBucket(0),
                    chunk_size=chunk, existing=lookup, stop=stop)


def test_reader_plain_gzip_folder_and_resume_offsets(tmp_path: Path) -> None:
    docs = alerts(5)
    (tmp_path / "d").mkdir()
    plain = write(tmp_path / "d" / "alerts.json", docs)
    packed = write(tmp_path / "d" / "ossec-alerts-01.json.gz", docs, compress=True)
    (tmp_path / "d" / "notes.txt").write_text("ignored")
    assert archive_files([tmp_path / "d"]) == [plain, packed]
    with pytest.raises(ArchiveNotFound):
        archive_files([tmp_path / "missing"])
    lines = list(ArchiveReader(plain))
    assert [line.number for line in lines] == [1, 2, 3, 4, 5]
    for path in (plain, packed):
        rest = list(ArchiveReader(path, start_line=lines[1].number,
                                  start_offset=lines[1].end_offset))
        assert [json.loads(r.data)["id"] for r in rest] == ["a-2", "a-3", "a-4"]


def test_truncated_gzip_keeps_complete_lines_and_says_so(tmp_path: Path) -> None:
    blob = gzip.compress(b"".join(json.dumps(d).encode() + b"\n" for d in alerts(400)))
    path = tmp_path / "cut.json.gz"
    path.write_bytes(blob[: len(blob) // 2])
    reader = ArchiveReader(path)
    lines = list(reader)
    assert 0 < len(lines) < 400
    assert all(json.loads(line.data) for line in lines)  # only complete lines
    assert reader.problem is not None and reader.problem.startswith("truncated gzip")


def test_filters_by_time_level_and_groups() -> None:
    doc = {"timestamp": "2026-11-20T07:58:41.402+0000",
           "rule": {"level": 6, "groups": ["sshd", "recon"]}}
    assert AlertFilter(min_level=6, groups=frozenset({"recon", "x"})).matches(doc)
    assert not AlertFilter(min_level=7).matches(doc)
    assert not AlertFilter(groups=frozenset({"web"})).matches(doc)
    day = datetime(2026, 11, 20, tzinfo=UTC)
    assert AlertFilter(since=day, until=datetime(2026, 11, 21, tzinfo=UTC)).matches(doc)
    assert not AlertFilter(until=day).matches(doc)
    assert not AlertFilter(since=day).matches({"rule": {"level": 3}})  # no time: out
    assert parse_line(b"not json").document is None
    assert parse_line(b'{"_source": {"id": "x", "rule": {}}}').alert_id == "x"
    assert parse_line(b'{"rule": {}}').alert_id == parse_line(b'{"rule": {}}').alert_id


def test_stop_and_resume_publish_every_alert_exactly_once(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json.gz", alerts(10), compress=True)
    sink, stop = Sink(), asyncio.Event()

    class StopAfterFirstChunk:
        def advance(self, raw_bytes: int, alerts: int) -> None:
            if len(sink.published) >= 4:
                stop.set()

    first = asyncio.run(job(tmp_path, sink, stop=stop).run([path], StopAfterFirstChunk()))
    assert first.interrupted and 4 <= len(sink.published) < 10
    second = asyncio.run(job(tmp_path, sink).run([path]))
    assert not second.interrupted
    assert sorted(sink.ids()) == sorted(f"a-{i}" for i in range(10))  # once each
    assert sink.tenants == {"acme"}
    third = asyncio.run(job(tmp_path, sink).run([path]))
    assert third.files[0].already_done and len(sink.published) == 10


def test_unacknowledged_chunk_is_not_checkpointed(tmp_path: Path) -> None:
    path = write(tmp_path / "a.json", alerts(10))
    with pytest.raises(ConnectionError):
        asyncio.run(job(tmp_path, Sink(fail_after=4)).run([path]))
    resumed = Sink()
    asyncio.run(job(tmp_path, resumed).run([path]))
    assert resumed.ids() == [f"a-{i}" for i in range(4, 10)]


def test_refused_dead_lettered_filtered_skipped_and_existing_verdicts(tmp_path: Path) -> None:
    huge = json.dumps({"id": "huge", "full_log": "x" * 200_000}).encode()
    docs: list[dict[str, Any] | bytes] = [*alerts(3, level=3), b"{broken", *alerts(6)[3:5],
                                          huge, b"[" * 1500 + b"]" * 1500, *alerts(6)[5:]]
    path = write(tmp_path / "a.json", docs)
    sink = Sink()
    report = asyncio.run(job(tmp_path, sink, alert_filter=AlertFilter(min_level=4),
                             existing={"a-4"}).run([path]))
    result = report.files[0]
    assert (result.filtered_out, result.dead_lettered, result.skipped_existing) == (3, 3, 1)
    assert [json.loads(v)["id"] for v in sink.published] == ["a-3", "a-5"]
    assert [letter.reason.split(":")[0] for letter in sink.letters] == [
        "line 4", "line 7", "line 8"]
    oversized = sink.letters[1]
    assert oversized.stage == "backfill" and oversized.original_truncated
    assert oversized.original_size == len(huge) and len(oversized.original) == 64 * 1024
    assert oversized.original_sha256 == hashlib.sha256(huge).hexdigest()
    assert "nested deeper" in sink.letters[2].reason


def test_checkpoint_of_another_file_at_the_same_path_is_ignored(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "cp")
    path = write(tmp_path / "a.json", alerts(2))
    store.save(FileIdentity.of(path), Checkpoint(line=2, offset=10, done=True))
    assert store.load(FileIdentity.of(path)).done
    write(path, alerts(3)[1:])  # rotated: new content
    assert store.load(FileIdentity.of(path)) == Checkpoint()


def test_estimate_counts_fingerprints_tokens_and_cost() -> None:
    base = alerts(24)
    lines = [json.dumps(d).encode() for d in base + base] + [b"[1]"]
    estimate = Estimate()
    count_alerts(lines, AlertFilter(), estimate, "acme")
    assert estimate.alerts == 49 and estimate.malformed == 1
    assert 1 < estimate.distinct_fingerprints <= 24  # repeats share a fingerprint
    settings = Settings(usage=UsageSettings(pricing={
        "default": ModelPrice(input_per_million=1.0, output_per_million=2.0)}))
    price(settings, estimate, TokensPerVerdict(1000, 100, "test"))
    calls = estimate.distinct_fingerprints
    assert estimate.input_tokens == calls * 1000
    assert estimate.cost == pytest.approx(calls * (1000 * 1.0 + 100 * 2.0) / 1e6)


def test_token_bucket_paces_to_the_rate() -> None:
    now = [0.0]
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    bucket = TokenBucket(100, burst=100, clock=lambda: now[0], sleep=sleep)

    async def take() -> None:
        for _ in range(5):
            await bucket.acquire(100)

    asyncio.run(take())
    assert sum(slept) == pytest.approx(4.0)  # 500 tokens: 100 of burst, 400 at 100/s
