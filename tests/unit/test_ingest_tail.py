"""`secanalyst tail` on a temp file: new lines, partial lines, restart from the
checkpoint, rotation (rename + new file) and truncation, and no checkpoint past an
unacknowledged publish."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.sources.tail import PositionFile, Tailer
from tests.unit.recording_sink import RecordingSink


@dataclass
class Sink(RecordingSink):
    fail: bool = False

    async def publish(self, tenant_id: str, alerts: Sequence[bytes]) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        assert tenant_id == "acme"
        await super().publish(tenant_id, alerts)


def append(path: Path, *lines: str, end: str = "\n") -> None:
    with path.open("a") as out:
        out.write("".join(f"{line}{end}" for line in lines))


def tailer(tmp_path: Path, sink: Sink, **kwargs: bool) -> Tailer:
    return Tailer(tmp_path / "alerts.json", sink, PositionFile(tmp_path / "pos.json"),
                  tenant_id="acme", **kwargs)


def poll(t: Tailer) -> int:
    return asyncio.run(t.poll_once())


def test_follows_new_lines_partial_lines_and_restarts(tmp_path: Path) -> None:
    path, sink = tmp_path / "alerts.json", Sink()
    append(path, '{"old": 1}')
    t = tailer(tmp_path, sink)
    assert poll(t) == 0  # first run starts at the end: history is backfill's job
    append(path, '{"a": 1}', '{"a": 2}')
    append(path, '{"a": 3', end="")  # still being written
    assert poll(t) == 2
    append(path, "}")
    assert poll(t) == 1
    t.close()
    append(path, '{"a": 4}')
    again = tailer(tmp_path, sink)
    assert poll(again) == 1  # resumed from the checkpoint, nothing re-sent
    assert sink.published == [b'{"a": 1}', b'{"a": 2}', b'{"a": 3}', b'{"a": 4}']


def test_from_start_reads_history(tmp_path: Path) -> None:
    append(tmp_path / "alerts.json", '{"old": 1}')
    sink = Sink()
    assert poll(tailer(tmp_path, sink, from_start=True)) == 1


def test_rotation_drains_the_old_file_then_follows_the_new_one(tmp_path: Path) -> None:
    path, sink = tmp_path / "alerts.json", Sink()
    path.touch()
    t = tailer(tmp_path, sink)
    poll(t)
    append(path, '{"day": 1}')
    poll(t)
    append(path, '{"day": 1.5}')  # written just before rotation, not polled yet
    path.rename(tmp_path / "alerts-yesterday.json")
    assert poll(t) == 1  # old file drained; new one does not exist yet
    append(path, '{"day": 2}')
    assert poll(t) == 1
    append(path, '{"day": 2.5}')
    assert poll(t) == 1
    assert sink.published == [b'{"day": 1}', b'{"day": 1.5}', b'{"day": 2}',
                              b'{"day": 2.5}']


def test_truncation_restarts_at_zero(tmp_path: Path) -> None:
    path, sink = tmp_path / "alerts.json", Sink()
    path.touch()
    t = tailer(tmp_path, sink)
    poll(t)
    append(path, '{"long": "' + "x" * 100 + '"}')
    poll(t)
    path.write_text('{"b": 1}\n')  # copytruncate-style: same inode, shorter
    assert poll(t) == 1
    assert sink.published[-1] == b'{"b": 1}'


def test_unacknowledged_lines_are_sent_again_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "alerts.json"
    path.touch()
    failing = Sink()
    t = tailer(tmp_path, failing)
    poll(t)
    append(path, '{"a": 1}')
    failing.fail = True
    with pytest.raises(ConnectionError):
        poll(t)
    t.close()
    sink = Sink()
    assert poll(tailer(tmp_path, sink)) == 1 and sink.published == [b'{"a": 1}']


def test_oversized_and_undecodable_lines_are_dead_lettered_by_line_number(
        tmp_path: Path) -> None:
    path, sink = tmp_path / "alerts.json", Sink(max_alert_bytes=8000)
    append(path, '{"a": 0}')
    t = tailer(tmp_path, sink)
    poll(t)  # starts at the end: line 1 is history
    big = '{"log": "' + "x" * 10_000 + '"}'
    append(path, '{"a": 1}', big, "[" * 100 + "]" * 100, '{"n": ' + "9" * 5000 + "}",
           '{"a": 2}')
    with path.open("ab") as out:
        out.write(b'{"bad": "\xff"}\n{"a": 3}\n')
    assert poll(t) == 3
    assert sink.published == [b'{"a": 1}', b'{"a": 2}', b'{"a": 3}']
    assert [letter.reason.split(":")[0] for letter in sink.letters] == [
        "line 3", "line 4", "line 5", "line 7"]
    assert "limit" in sink.letters[0].reason and "nested" in sink.letters[1].reason
    assert "digits" in sink.letters[2].reason and "UTF-8" in sink.letters[3].reason
    assert all(letter.stage == "tail" and letter.tenant_id == "acme" for letter in sink.letters)
    assert t.dead_lettered == 4
    t.close()
    append(path, "not json")  # line numbers survive a restart (kept in the checkpoint)
    again = tailer(tmp_path, sink)
    assert poll(again) == 0 and sink.letters[-1].reason.startswith("line 9: not valid JSON")
