"""Wazuh archives as lines: alerts.json (JSON lines), .gz, or folders of daily files.

Each line carries its number and the uncompressed byte offset just after it, so a reader
can resume at a checkpoint: plain files seek there, gzip files skip forward. A truncated
or corrupt gzip ends the file with `problem` set; every complete line before it is kept.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, NamedTuple, Protocol, cast

from zlib_ng import zlib_ng

ARCHIVE_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".log", ".log.gz")
_HEAD_BYTES = 4096
# Read (and inflate) this much at a time and split it into lines: line-by-line reads of
# a GzipFile cost more than the inflating itself; blocks of 256 KiB split faster than
# 1 MiB ones (they stay in the CPU's cache). 64 KiB of gzip inflate to about that much.
_BLOCK_BYTES = 256 << 10
_RAW_BLOCK_BYTES = 64 << 10
_GZIP_WBITS = 31  # a gzip header and trailer (CRC and length checked) around deflate
# zlib-ng's stubs declare its error an instance and leave out copy(): typed here.
CorruptGzip = cast(type[Exception], zlib_ng.error)


class _Inflater(Protocol):
    eof: bool
    unused_data: bytes
    unconsumed_tail: bytes

    def decompress(self, data: bytes, max_length: int = 0, /) -> bytes: ...

    def copy(self) -> _Inflater: ...


def _gzip_inflater() -> _Inflater:
    return cast(_Inflater, zlib_ng.decompressobj(_GZIP_WBITS))


class ArchiveNotFound(ValueError):
    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is neither an archive file nor a folder of them")
        self.path = path


def archive_files(paths: list[Path]) -> list[Path]:
    """Files in the order given; a folder contributes its archives, recursively, sorted."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*")
                                if p.is_file() and p.name.endswith(ARCHIVE_SUFFIXES)))
        elif path.is_file():
            found.append(path)
        else:
            raise ArchiveNotFound(path)
    return found


@dataclass(frozen=True)
class FileIdentity:
    """Which file a checkpoint belongs to: its real path and the hash of its first bytes
    (a rotated or rewritten file at the same path is another file)."""

    path: str
    head_sha256: str

    @classmethod
    def of(cls, path: Path) -> FileIdentity:
        with path.open("rb") as raw:
            head = raw.read(_HEAD_BYTES)
        return cls(str(path.resolve()), hashlib.sha256(head).hexdigest())

    @property
    def key(self) -> str:
        return hashlib.sha256(self.path.encode()).hexdigest()[:24]


class Line(NamedTuple):  # a tuple: one is made per alert, and cheaply
    number: int  # 1-based
    end_offset: int  # uncompressed bytes up to and including this line
    data: bytes


def is_gzip(path: Path) -> bool:
    with path.open("rb") as raw:
        return raw.read(2) == b"\x1f\x8b"


class ArchiveReader:
    """Iterate the complete lines of one file from (line, offset); `raw_position` is how
    far into the file on disk the reader is (for progress); `problem` is set when the
    file ends early (truncated or corrupt gzip, unterminated last line)."""

    def __init__(self, path: Path, *, start_line: int = 0, start_offset: int = 0) -> None:
        self.path = path
        self.start_line = start_line
        self.start_offset = start_offset
        self.compressed = is_gzip(path)
        self.size = path.stat().st_size
        self.problem: str | None = None
        self._raw: IO[bytes] | None = None

    @property
    def raw_position(self) -> int:
        if self._raw is None or self._raw.closed:
            return self.size
        return self._raw.tell()

    def __iter__(self) -> Iterator[Line]:
        with self.path.open("rb") as raw:
            self._raw = raw
            if self.compressed:
                yield from self._lines(inflated_blocks(raw), skip=True)
            else:
                raw.seek(self.start_offset)
                yield from self._lines(iter(lambda: raw.read(_BLOCK_BYTES), b""), skip=False)

    def _lines(self, blocks: Iterable[bytes], *, skip: bool) -> Iterator[Line]:
        number, offset = (0, 0) if skip else (self.start_line, self.start_offset)
        pending: list[bytes] = []  # the part after the last line end: not a line yet
        try:
            for block in blocks:
                end = block.rfind(b"\n")
                if end < 0:  # inside one long line: joined once its end comes (linear)
                    pending.append(block)
                    continue
                pieces = b"".join((*pending, block[:end])).split(b"\n")
                pending = [block[end + 1:]]
                for piece in pieces:
                    number += 1
                    offset += len(piece) + 1
                    if skip and number <= self.start_line:
                        continue
                    data = piece.strip()
                    if data:
                        yield Line(number, offset, data)
        except EOFError:
            self.problem = (f"truncated gzip: the file ends after line {number} "
                            f"({offset} bytes inflated); every complete line before "
                            "was read")
            return
        except (gzip.BadGzipFile, zlib.error, CorruptGzip, OSError) as exc:
            self.problem = f"corrupt gzip after line {number}: {exc}"
            return
        rest = b"".join(pending)
        if rest and not (skip and number + 1 <= self.start_line):
            self.problem = (f"line {number + 1} has no line end (file cut while being "
                            "written?); published as it is")
            if data := rest.strip():
                yield Line(number + 1, offset + len(rest), data)


def inflated_blocks(raw: IO[bytes]) -> Iterator[bytes]:
    """The inflated bytes of a gzip file, every member in turn, in blocks of at most
    `_BLOCK_BYTES` (a gzip bomb never sits in memory whole). zlib-ng inflates ~3x faster
    than the stdlib's zlib (the biggest cost of a replay after JSON); each block is handed
    on as soon as it is inflated, so a cut or corrupt file keeps every line before the
    damage (a corrupt stretch is inflated again in small steps to reach it). Raises
    EOFError when the file ends inside a member, CorruptGzip when it is corrupt (bad
    data, CRC or length); zero bytes between or after members are padding, as `gzip`
    allows."""
    inflater = _gzip_inflater()
    in_member = False
    while data := raw.read(_RAW_BLOCK_BYTES):
        full = False  # a full block may leave inflated bytes inside the inflater
        while data or full:
            if not in_member:
                data = data.lstrip(b"\0")
                if not data:
                    break
                in_member = True
            before = inflater.copy()
            try:
                block = inflater.decompress(data, _BLOCK_BYTES)
            except CorruptGzip:  # that call's output is lost: inflate it again in steps
                yield from _before_damage(before, data)
                raise
            full = len(block) == _BLOCK_BYTES
            if block:
                yield block
            if inflater.eof:  # what follows is the next member (or padding)
                data, full = inflater.unused_data, False
                inflater, in_member = _gzip_inflater(), False
            else:
                data = inflater.unconsumed_tail
    if in_member:
        raise EOFError("the gzip file ends inside a member")


def _before_damage(inflater: _Inflater, data: bytes,
                   step: int = 1024) -> Iterator[bytes]:
    """What `inflater` makes of `data` up to the first corrupt byte: `step` bytes at a
    time, and the step that fails again byte by byte (a bad CRC fails only on the
    trailer: every byte before it is kept). Deflate expands 1,032:1 at most."""
    for start in range(0, len(data), step):
        before = inflater.copy()
        try:
            piece = inflater.decompress(data[start:start + step])
        except CorruptGzip:
            if step > 1:
                yield from _before_damage(before, data[start:start + step], step=1)
            return
        if piece:
            yield piece
