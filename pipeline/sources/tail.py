"""`secanalyst tail /var/ossec/logs/alerts/alerts.json`: follow Wazuh's alerts file into
alerts.raw, at least once.

The position (device, inode, byte offset) is checkpointed after Kafka acknowledged every
line before it, so a restart resumes where it stopped (a crash between the ack and the
checkpoint re-sends those lines; the verdicts table keeps that idempotent). Rotation
(the path now names another inode, as Wazuh's daily rotation does) is followed after
draining the old file; truncation (the file is shorter than our offset) restarts at 0.
A first run with no checkpoint starts at the end of the file (history is `backfill`'s
job) unless `from_start`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import structlog

from pipeline.kafka.alert_guard import AlertRefused, screen_alert
from pipeline.kafka.producer import AlertSinkWithDLQ, dead_letter_line

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Position:
    device: int
    inode: int
    offset: int
    line: int | None = None  # complete lines before `offset` (None: not counted yet)


class PositionFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> Position | None:
        if not self.path.exists():
            return None
        return Position(**json.loads(self.path.read_text()))

    def save(self, position: Position) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(position)))
        os.replace(tmp, self.path)


class Tailer:
    def __init__(self, path: Path, sink: AlertSinkWithDLQ, positions: PositionFile, *,
                 tenant_id: str, from_start: bool = False, max_batch: int = 500,
                 read_size: int = 1 << 20) -> None:
        self.path = path
        self.sink = sink
        self.positions = positions
        self.tenant_id = tenant_id
        self.from_start = from_start
        self.max_batch = max_batch
        self.read_size = read_size
        self._file: IO[bytes] | None = None
        self._position: Position | None = None
        self._pending = b""  # a line not complete yet
        self.dead_lettered = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open(self) -> bool:
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return False
        st = os.fstat(handle.fileno())
        saved = self.positions.load()
        if saved is not None and (saved.device, saved.inode) == (st.st_dev, st.st_ino) \
                and saved.offset <= st.st_size:
            offset = saved.offset
        elif saved is None and not self.from_start:
            offset = st.st_size
        else:
            offset = 0  # a new file (rotated while we were away) or a truncated one
        line = saved.line if saved is not None and offset == saved.offset else None
        if line is None:
            line = _count_lines(handle, offset)
        handle.seek(offset)
        self._file, self._pending = handle, b""
        self._position = Position(st.st_dev, st.st_ino, offset, line)
        self.positions.save(self._position)
        log.info("tail_opened", path=str(self.path), inode=st.st_ino, offset=offset)
        return True

    async def poll_once(self) -> int:
        """Publish the complete lines written since the last call; follow rotation and
        truncation. Return how many lines were published."""
        if self._file is None and not self._open():
            return 0
        sent = await self._drain(final=False)
        position = self._position
        assert position is not None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return sent  # rotated away, new file not created yet: keep the old one
        if (st.st_dev, st.st_ino) != (position.device, position.inode):
            sent += await self._drain(final=True)  # the last lines of the old file
            self.close()
            self.positions.save(Position(st.st_dev, st.st_ino, 0, 0))
            self._open()
            sent += await self._drain(final=False)
        elif st.st_size < position.offset:
            log.warning("tail_truncated", path=str(self.path), offset=position.offset,
                        size=st.st_size)
            assert self._file is not None
            self._file.seek(0)
            self._pending = b""
            self._position = Position(position.device, position.inode, 0, 0)
            self.positions.save(self._position)
            sent += await self._drain(final=False)
        return sent

    async def _drain(self, *, final: bool) -> int:
        assert self._file is not None and self._position is not None
        sent = 0
        while True:
            data = self._file.read(self.read_size)
            if not data and not (final and self._pending):
                return sent
            buffer = self._pending + data
            if final and not data:
                lines, self._pending = [buffer], b""  # unterminated last line
            else:
                head, sep, self._pending = buffer.rpartition(b"\n")
                lines = head.split(b"\n") if sep else []
                if not sep:
                    self._pending = buffer
            consumed = sum(len(line) + 1 for line in lines)
            if final and not data:
                consumed = len(buffer)
            first_line = (self._position.line or 0) + 1
            values = await self._screen(lines, first_line)
            for start in range(0, len(values), self.max_batch):
                await self.sink.publish(self.tenant_id, values[start:start + self.max_batch])
            sent += len(values)
            self._position = Position(self._position.device, self._position.inode,
                                      self._position.offset + consumed,
                                      first_line - 1 + len(lines))
            self.positions.save(self._position)  # after the acks: at least once

    async def _screen(self, lines: list[bytes], first_line: int) -> list[bytes]:
        """The lines to publish; a line over the size limit or not decodable goes to the
        DLQ (acknowledged before the position moves past it), named by its line number."""
        values: list[bytes] = []
        for number, line in enumerate(lines, start=first_line):
            data = line.strip()
            if not data:
                continue
            try:
                screen_alert(data, max_bytes=self.sink.max_alert_bytes)
            except AlertRefused as refusal:
                await dead_letter_line(self.sink, "tail", data, refusal,
                                       tenant_id=self.tenant_id, line=number)
                self.dead_lettered += 1
                continue
            values.append(data)
        return values

    async def run(self, stop: asyncio.Event, poll_s: float) -> None:
        try:
            while not stop.is_set():
                await self.poll_once()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_s)
        finally:
            self.close()


def _count_lines(handle: IO[bytes], offset: int, chunk: int = 1 << 20) -> int:
    """Newlines before `offset` (for line numbers in warnings when resuming mid-file)."""
    handle.seek(0)
    count, left = 0, offset
    while left > 0:
        data = handle.read(min(chunk, left))
        if not data:
            break
        count += data.count(b"\n")
        left -= len(data)
    return count
