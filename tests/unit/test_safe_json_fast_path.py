"""The bounded decoder's fast path (msgspec) gives the stdlib path's answer on every
input: the same value, or the same refusal with the same reason."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from pipeline.analysis.safe_json import MAX_DEPTH, JSONRejected, _loads_stdlib, loads_bounded

SAMPLES = Path(__file__).resolve().parents[2] / "samples" / "wazuh-alerts.jsonl"
# Pieces an attacker (or a damaged archive) puts into a line: structure, escapes, numbers
# past every limit, bytes that are not UTF-8, characters JSON forbids, deep nesting.
PIECES = [b"{", b"}", b"[", b"]", b",", b":", b'"', b"\\", b"\\u", b"\\ud800", b"\\udc00",
          b"\\ud83d\\ude00", b"0", b"-", b".", b"e", b"+", b"1e400", b"99999999999999999999999",
          b"NaN", b"Infinity", b"nul", b" ", b"\t", b"\x0b", b"\x0c", b"\x00", b"\x1f",
          b"\x7f", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xef\xbb\xbf", b"//", b"'", b"01",
          b"1.", b".5", b"\xe2\x80\xa8", b"-0", b"1" * 50, b"[" * 70, b"]" * 70,
          b'{"a":' * 70]


def outcome(decode: Any, data: bytes | str) -> tuple[Any, ...]:
    try:
        return ("accepted", repr(decode(data)))
    except JSONRejected as exc:
        return (exc.kind, exc.message, exc.extra_data)


def stdlib(data: bytes | str) -> Any:
    return _loads_stdlib(data, MAX_DEPTH)


def mutated(rnd: random.Random, line: bytes) -> bytes:
    data = bytearray(line)
    for _ in range(rnd.randint(1, 3)):
        at = rnd.randrange(len(data) + 1)
        choice = rnd.random()
        if choice < 0.4:
            data[at:at] = rnd.choice(PIECES)
        elif choice < 0.7:
            del data[at:at + rnd.randint(1, 5)]
        else:
            data[at:at + 1] = rnd.choice(PIECES)
    if rnd.random() < 0.05:  # the whole alert nested near or past the limit
        depth = rnd.randint(MAX_DEPTH - 2, MAX_DEPTH + 2)
        return b"[" * depth + bytes(data) + b"]" * depth
    return bytes(data)


def test_fast_path_agrees_with_stdlib_on_damaged_alerts() -> None:
    lines = [line for line in SAMPLES.read_bytes().splitlines() if line.strip()]
    rnd = random.Random(15)
    kinds: set[str] = set()
    for _ in range(3000):
        data = mutated(rnd, rnd.choice(lines))
        fast = outcome(loads_bounded, data)
        assert fast == outcome(stdlib, data), data[:300]
        kinds.add(fast[0])
    # the mutations reached both answers and several refusals
    assert {"accepted", "invalid_json", "not_utf8", "too_deep"} <= kinds


def test_fast_path_agrees_on_numbers() -> None:
    rnd = random.Random(20)
    for _ in range(3000):
        text = rnd.choice([repr(rnd.uniform(-1e300, 1e300)), repr(rnd.random()),
                           str(rnd.getrandbits(rnd.randint(1, 400)) * rnd.choice((1, -1))),
                           f"{rnd.randint(0, 10**20)}.{rnd.randint(0, 10**20)}"
                           f"e{rnd.randint(-330, 330)}"])
        assert outcome(loads_bounded, text) == outcome(stdlib, text), text


@pytest.mark.parametrize(("data", "expected"), [
    # exact beyond 64 bits (orjson would give a float here)
    (b'{"n": 18446744073709551616}', {"n": 18446744073709551616}),
    (b'["\\ud800"]', ["\ud800"]),  # lone surrogate escape: JSON allows it, stdlib decides
    (b'{"a": 1, "a": 2}', {"a": 2}),
    (b" \t\r\n[1e-400, -0.0]\n", [0.0, -0.0]),
])
def test_values_are_the_stdlib_values(data: bytes, expected: Any) -> None:
    assert loads_bounded(data) == expected
    assert loads_bounded(data.decode()) == expected


@pytest.mark.parametrize(("data", "kind"), [
    (b"[1e400]", "number_out_of_range"),
    (b"1" * 5000, "number_too_long"),
    (b"[" * 65 + b"]" * 65, "too_deep"),
    (b"[" * 5000 + b"]" * 5000, "too_deep"),
    (b'{"a": "\xff"}', "not_utf8"),
    (b"[NaN]", "invalid_json"),
    (b'{"a": 1}\n{"a": 2}', "invalid_json"),
])
def test_refusals_keep_their_reason(data: bytes, kind: str) -> None:
    with pytest.raises(JSONRejected) as refused:
        loads_bounded(data)
    assert refused.value.kind == kind
    assert outcome(loads_bounded, data) == outcome(stdlib, data)
