"""A small parser for the few Prometheus sample lines the router reads from `/metrics`.

prometheus_client's text parser builds every family, bucket and label of a vLLM scrape
(~600 lines, ~11 ms of CPU); the router needs five sample names. This picks the lines that
start with one of them (one C-level `startswith` per line) and parses only those, to the
exposition format's rules: labels with escaped values, `NaN`/`+Inf`, an optional timestamp.
Comments and other samples are skipped unparsed, so garbage there is not noticed.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from typing import NamedTuple

# name, optional {labels} (quoted values may hold `}` `,` `\"`), value, optional timestamp.
_SAMPLE = re.compile(
    r'([a-zA-Z_:][a-zA-Z0-9_:]*)[ \t]*'
    r'(?:\{((?:[^"}]|"(?:[^"\\\n]|\\.)*")*)\})?'
    r'[ \t]+(\S+)(?:[ \t]+(-?[0-9]+))?[ \t]*')
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*(,|$)')
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"n": "\n", "\\": "\\", '"': '"'}


class Sample(NamedTuple):
    name: str
    labels: dict[str, str]
    value: float


def samples(text: str, names: Collection[str]) -> Iterator[Sample]:
    """The samples of `text` whose name is one of `names`; ValueError on a malformed one."""
    wanted = frozenset(names)
    prefixes = tuple(wanted)
    for line in text.split("\n"):
        if not line.startswith(prefixes):
            continue
        match = _SAMPLE.fullmatch(line.rstrip("\r"))
        if match is None:
            if _sample_name(line) in wanted:
                raise ValueError(f"malformed Prometheus sample line: {line[:200]!r}")
            continue  # a longer name that shares the prefix (…_by_reason)
        name, raw_labels, raw_value, _timestamp = match.groups()
        if name in wanted:
            yield Sample(name, _labels(raw_labels or "", line), _value(raw_value, line))


def _sample_name(line: str) -> str:
    end = len(line)
    for stop in "{ \t":
        found = line.find(stop)
        if found != -1:
            end = min(end, found)
    return line[:end]


def _labels(raw: str, line: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while raw[position:].strip():  # a trailing comma is allowed
        match = _LABEL.match(raw, position)
        if match is None:
            raise ValueError(f"malformed Prometheus labels: {line[:200]!r}")
        labels[match[1]] = _ESCAPE.sub(lambda m: _UNESCAPED.get(m[1], m[0]), match[2])
        position = match.end()
        if not match[3]:  # no comma: that was the last label
            break
    return labels


def _value(raw: str, line: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"malformed Prometheus value: {line[:200]!r}") from None
