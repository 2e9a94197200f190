"""`secanalyst tail` on a temp file: new lines, partial lines, restart from the
checkpoint, rotation (rename + new file) and truncation, and no checkpoint past an
unacknowledged publish."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.tail import PositionFile, Tailer


@dataclass
class Sink:
    fail: bool = False
    published: list[bytes] = field(default_factory=list)

    async def publish(self, tenant_id: str, alerts: Sequence[bytes]) -> None:
        if self.fail:
            raise ConnectionError("broker gone")
        assert tenant_id == "acme"
        self.published.extend(alerts)


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
