"""Hypothesis strategies for hostile Wazuh alerts, as the bytes a producer would send:
real sample alerts with fields of the wrong type or missing, huge strings, deep nesting,
invalid UTF-8 and lone surrogates, NUL and control characters, non-object JSON,
duplicate keys, numbers beyond float range and past Python's integer digit limit."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

ROOT = Path(__file__).parents[2]
SAMPLES: list[dict[str, Any]] = [
    json.loads(line) for line in (ROOT / "samples" / "wazuh-alerts.jsonl").read_text()
    .splitlines() if line.strip()]
# Fields a mutation targets (dotted paths; a missing parent is created as an object).
PATHS = ("rule", "rule.id", "rule.level", "rule.description", "rule.groups", "rule.mitre",
         "rule.mitre.id", "rule.firedtimes", "agent", "agent.id", "agent.name", "agent.ip",
         "manager", "manager.name", "id", "timestamp", "@timestamp", "full_log", "location",
         "decoder", "decoder.name", "data", "data.srcip", "data.srcuser", "data.win",
         "_source", "parameters", "parameters.alert", "srcip", "predecoder")
_MARK = "\u2603FUZZ\u2603"  # replaced in the serialized text by raw JSON (deep, huge numbers)

surrogates = st.integers(0xD800, 0xDFFF).map(chr)
# Ordinary text with a few hostile characters spliced in (cheaper to draw than a list of
# single characters: the full run draws 100,000 alerts).
_HOSTILE_CHARS = [chr(c) for c in [*range(0x20), 0x7F, 0xD800, 0xDBFF, 0xDC00, 0xDFFF,
                                   0xFFFE, 0xFEFF, 0x202E]]
mixed_text = st.tuples(st.text(max_size=20),
                       st.lists(st.sampled_from(_HOSTILE_CHARS), max_size=3).map("".join),
                       st.text(max_size=20)).map("".join)
hostile_text = st.one_of(  # huge strings are one draw in eight: they are slow to handle
    st.text(max_size=40), mixed_text, st.text(max_size=40), mixed_text, mixed_text,
    st.sampled_from(["", " ", "\x00", "\ud800", "\udfff\ud800", "1.2.3.4\x00", "999.1.1.1",
                     "<script>", "'; DROP TABLE alerts; --", "\u202e", "\ufeff"]),
    st.sampled_from(["\x00" * 100, "\ud800" * 100, "\u0000\ud800" * 50]),
    st.sampled_from([5_000, 70_000, 1_200_000]).map(lambda n: "A" * n),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(),
                    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
                    st.floats(allow_nan=False, allow_infinity=False), hostile_text)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.one_of(st.text(max_size=8), surrogates), inner, max_size=4),
    max_leaves=6)
raw_json = st.one_of(  # text no Python value serializes to
    st.integers(1, 20_000).map(lambda n: "[" * n + "]" * n),
    st.integers(1, 5_000).map(lambda n: '{"a":' * n + "1" + "}" * n),
    st.integers(4_000, 12_000).map(lambda n: "9" * n),
    st.sampled_from(["1e400", "-1e400", "1e-400", "NaN", "Infinity", "-Infinity",
                     "1" * 400 + ".5", "0.0000000001e-330", "-0", "1E+9999999999"]),
)


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = document
    for key in parents:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[last] = value


def _delete(document: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    node: Any = document
    for key in parents:
        node = node.get(key) if isinstance(node, dict) else None
    if isinstance(node, dict):
        node.pop(last, None)


@st.composite
def mutated_alert(draw: st.DrawFn) -> dict[str, Any]:
    """A real sample alert with 0-5 fields deleted or replaced by arbitrary JSON."""
    alert = copy.deepcopy(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(0, 5))):
        path = draw(st.sampled_from(PATHS))
        if draw(st.integers(0, 3)) == 0:
            _delete(alert, path)
        else:
            _set(alert, path, draw(json_values))
    return alert


@st.composite
def encoded_alert(draw: st.DrawFn) -> bytes:
    """A mutated alert as bytes, then perhaps made hostile at the byte or text level."""
    alert = draw(mutated_alert())
    how = draw(st.sampled_from(["ascii", "utf8", "raw_json", "duplicate", "bytes"]))
    if how == "raw_json":
        _set(alert, draw(st.sampled_from(PATHS)), _MARK)
    text = json.dumps(alert, ensure_ascii=how == "ascii")
    if how == "raw_json":
        text = text.replace(json.dumps(_MARK, ensure_ascii=False), draw(raw_json), 1)
    elif how == "duplicate":  # the same key twice: a later value of another type
        key = draw(st.sampled_from(["rule", "id", "agent", "full_log", "data"]))
        text = "{" + json.dumps(key) + ":" + json.dumps(draw(json_values)) + "," + text[1:]
    data = text.encode("utf-8", "surrogatepass")  # a lone surrogate → invalid UTF-8 bytes
    if how == "bytes":  # splice invalid or odd bytes somewhere
        at = draw(st.integers(0, len(data)))
        junk = draw(st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82",
                                     b"\x00", b"\xef\xbb\xbf", b"\n", b"\\", b'"']))
        data = data[:at] + junk + data[at:]
    return data


def alert_bytes() -> st.SearchStrategy[bytes]:
    """Every kind of hostile alert, most of them near-valid (the interesting edge)."""
    non_object = json_values.filter(lambda v: not isinstance(v, dict)).map(
        lambda v: json.dumps(v).encode("utf-8", "surrogatepass"))
    return st.one_of(encoded_alert(), encoded_alert(), encoded_alert(), non_object,
                     raw_json.map(str.encode), st.binary(max_size=300))
