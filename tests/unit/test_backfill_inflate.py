"""The backfill's gzip inflater (zlib-ng) against the stdlib's gzip on whole, cut and
damaged archives: the same bytes when whole (several members, zero padding), and never
fewer bytes before the damage than `gzip` recovers."""

from __future__ import annotations

import gzip
import io
import random
import zlib
from pathlib import Path

import pytest

from pipeline.sources.backfill import reader
from pipeline.sources.backfill.reader import ArchiveReader, CorruptGzip, inflated_blocks


def ours(blob: bytes) -> tuple[bytes, str | None]:
    out: list[bytes] = []
    try:
        for block in inflated_blocks(io.BytesIO(blob)):
            out.append(block)
    except EOFError:
        return b"".join(out), "cut"
    except CorruptGzip:
        return b"".join(out), "corrupt"
    return b"".join(out), None


def stdlib(blob: bytes) -> tuple[bytes, str | None]:
    out: list[bytes] = []
    stream = gzip.GzipFile(fileobj=io.BytesIO(blob))
    try:
        while block := stream.read1(1 << 16):
            out.append(block)
    except EOFError:
        return b"".join(out), "cut"
    except (gzip.BadGzipFile, zlib.error):
        return b"".join(out), "corrupt"
    return b"".join(out), None


def archive(rnd: random.Random) -> bytes:
    members = []
    for _ in range(rnd.randint(1, 3)):
        size = rnd.randint(0, 8_000)
        payload = rnd.choice([bytes(size), rnd.randbytes(size), b'{"a": 1}\n' * (size // 9)])
        members.append(gzip.compress(payload, compresslevel=rnd.randint(1, 9))
                       + bytes(rnd.choice((0, 0, 4))))  # zero padding, as gzip allows
    return b"".join(members)


@pytest.mark.parametrize("seed", [1, 2])
def test_inflater_keeps_whatever_gzip_keeps(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(seed)
    seen = set()
    for _ in range(100):
        # small blocks on both sides, so block edges fall everywhere
        monkeypatch.setattr(reader, "_BLOCK_BYTES", rnd.choice([1, 7, 4096, 1 << 20]))
        monkeypatch.setattr(reader, "_RAW_BLOCK_BYTES", rnd.choice([1, 13, 1000, 65536]))
        blob = archive(rnd)
        damage = rnd.choice(["none", "cut", "flip"])
        if damage == "cut":
            blob = blob[:rnd.randint(1, len(blob))]
        elif damage == "flip" and len(blob) > 30:
            at = rnd.randrange(10, len(blob))
            blob = blob[:at] + bytes([blob[at] ^ 0xFF]) + blob[at + 1:]
        (got, problem), (expected, std_problem) = ours(blob), stdlib(blob)
        assert (problem is None) == (std_problem is None)
        if problem is None:
            assert got == expected
        else:
            assert got.startswith(expected)  # every byte gzip had before the damage
        seen.add(problem)
    assert seen == {None, "cut", "corrupt"}


def test_corrupt_crc_keeps_every_line_and_says_so(tmp_path: Path) -> None:
    lines = b"".join(b'{"id": "a-%d"}\n' % i for i in range(5000))
    blob = bytearray(gzip.compress(lines))
    blob[-8] ^= 0xFF  # the CRC in the trailer: every line is intact, the check fails
    path = tmp_path / "crc.json.gz"
    path.write_bytes(bytes(blob))
    archive_reader = ArchiveReader(path)
    assert len(list(archive_reader)) == 5000
    assert archive_reader.problem is not None and "corrupt gzip" in archive_reader.problem
