"""The body of POST /ingest/wazuh: read it within a size limit, inflate gzip within a
limit, and split it into alert objects — or say exactly what is wrong.

Accepted shapes (all-or-nothing: one bad item refuses the whole request, naming it, and
nothing is published — so a client can fix and resend without creating duplicates):

- one alert object (Wazuh 4.x alerts.json line, indexer document with `_source`, ...);
- a JSON array of alert objects;
- JSON lines (`application/x-ndjson`, or `application/json` whose text is several
  objects one a line);
- a Wazuh 5.x / OpenSearch notification webhook envelope: `{"alerts": [...]}`, or a
  search-style `{"hits": {"hits": [{"_source": {...}}, ...]}}` (what an alerting monitor's
  `ctx.results.0` holds), unwrapped into its alerts.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator
from typing import Any

from pipeline.analysis.safe_json import (
    MAX_DEPTH,
    JSONRejected,
    iter_array,
    loads_bounded,
    nesting_depth,
)
from pipeline.kafka.alert_guard import AlertRefused, check_size


class BodyError(Exception):
    """The request body is refused; `status_code` is 400, 413 or 415."""

    def __init__(self, status_code: int, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.param = param


def too_large(limit: int, what: str = "request body") -> BodyError:
    return BodyError(413, f"{what} is larger than {limit} bytes")


async def read_limited(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, or 413 as soon as more than `limit` bytes have arrived."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


def gunzip_limited(data: bytes, limit: int) -> bytes:
    """Inflate gzip without ever holding more than `limit` bytes (gzip bomb guard)."""
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BodyError(400, f"the body is not valid gzip: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise too_large(limit, "decompressed body")
    if not inflater.eof:
        raise BodyError(400, "the gzip body is truncated")
    return out


def _unwrap_envelope(document: dict[str, Any]) -> list[Any] | None:
    """The alerts inside a notification envelope, or None when it is an alert itself."""
    if "rule" in document:
        return None
    alerts = document.get("alerts")
    if isinstance(alerts, list):
        return alerts
    hits = document.get("hits")
    if isinstance(hits, dict) and isinstance(hits.get("hits"), list):
        return list(hits["hits"])
    return None


def _refused(where: str, exc: JSONRejected | AlertRefused) -> BodyError:
    status = exc.http_status if isinstance(exc, AlertRefused) else 400
    return BodyError(status, f"{where}: {exc}", param=where)


def _json_lines(text: str) -> list[Any]:
    items: list[Any] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(loads_bounded(line))
        except JSONRejected as exc:
            raise _refused(f"line {number}", exc) from exc
    return items


def _array_items(text: str) -> list[Any]:
    items: list[Any] = []
    try:
        for item in iter_array(text):
            items.append(item)
    except JSONRejected as exc:
        raise _refused(f"item {len(items)}", exc) from exc
    return items


def _serialize(item: dict[str, Any]) -> bytes:
    try:
        return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        # A lone surrogate (`"\ud800"`) cannot be UTF-8: keep it as its JSON escape and
        # let the normalize stage decide (it sanitizes what the database cannot store).
        return json.dumps(item, separators=(",", ":")).encode()


def parse_alerts(data: bytes, content_type: str, *,
                 max_alert_bytes: int = 1_000_000) -> list[bytes]:
    """Alert objects as compact JSON bytes, one per alert; BodyError naming the problem
    (and the item or line) — every item is checked before any is returned."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in {"application/json", "application/x-ndjson", "application/jsonl",
                     "application/json-lines", ""}:
        raise BodyError(415, f"unsupported content type {media!r}; send application/json "
                             "or application/x-ndjson")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(400, f"the body is not UTF-8 (byte {exc.start})") from exc
    if not text.strip():
        raise BodyError(400, "the body is empty")
    items: list[Any]
    if media not in {"application/json", ""}:
        items = _json_lines(text)
    elif text.lstrip().startswith("["):
        items = _array_items(text)
    else:
        try:
            # An envelope nests its alerts up to 4 levels deeper than they are.
            parsed = loads_bounded(text, max_depth=MAX_DEPTH + 4)
        except JSONRejected as exc:
            if not exc.extra_data:
                raise BodyError(400, f"the body is refused: {exc}") from exc
            parsed = _json_lines(text)  # several objects, one a line
        items = parsed if isinstance(parsed, list) else [parsed]
    if len(items) == 1 and isinstance(items[0], dict):
        inner = _unwrap_envelope(items[0])
        if inner is not None:
            items = inner
    out: list[bytes] = []
    for index, item in enumerate(items):
        where = f"item {index}"
        if not isinstance(item, dict):
            raise BodyError(400, f"{where}: expected a JSON object, got "
                                 f"{_json_type(item)}", param=where)
        if not item:
            raise BodyError(400, f"{where}: empty object", param=where)
        if nesting_depth(item) > MAX_DEPTH:
            raise BodyError(400, f"{where}: nested deeper than {MAX_DEPTH} levels",
                            param=where)
        value = _serialize(item)
        try:
            check_size(len(value), max_alert_bytes)
        except AlertRefused as exc:
            raise _refused(where, exc) from exc
        out.append(value)
    if not out:
        raise BodyError(400, "no alerts in the body")
    return out


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string",
            list: "an array"}.get(type(value), type(value).__name__)
