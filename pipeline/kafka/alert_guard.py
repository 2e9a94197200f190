"""What every producer path checks before an alert goes to Kafka: its size (the
configured `ingest.max_alert_bytes`, below the broker's message size, so no send fails on
it) and that it decodes within bounds (pipeline/analysis/safe_json.py) as a JSON object. A refused
line of a file becomes a dead letter that always fits on the DLQ itself."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from pipeline.analysis.safe_json import JSONRejected, loads_bounded
from schemas.messages import DeadLetter

# An oversized original is kept as its first 64 KiB + sha256 + length: the letter fits.
LETTER_HEAD_BYTES = 64 * 1024


class AlertRefused(ValueError):
    """One alert cannot be sent; `kind` is too_large, not_object or a JSONRejected kind."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason

    @property
    def http_status(self) -> int:
        return 413 if self.kind == "too_large" else 400


def check_size(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise AlertRefused("too_large", f"the alert is {size:,} bytes, over the "
                                        f"{max_bytes:,}-byte limit (ingest.max_alert_bytes)")


def screen_alert(data: bytes, *, max_bytes: int) -> dict[str, Any]:
    """The decoded alert object, or AlertRefused saying why it cannot be sent."""
    check_size(len(data), max_bytes)
    try:
        document = loads_bounded(data)
    except JSONRejected as exc:
        raise AlertRefused(exc.kind, exc.message) from exc
    if not isinstance(document, dict):
        raise AlertRefused("not_object", "expected a JSON object, got "
                                         f"{type(document).__name__}")
    return document


def _as_text(data: bytes) -> tuple[str, str]:
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode(), "base64"


def refused_letter(stage: str, data: bytes, refusal: AlertRefused, *, tenant_id: str,
                   topic: str, line: int) -> DeadLetter:
    """The dead letter of a refused line: the reason with its line number, the original
    (its first 64 KiB, sha256 and length when larger), the topic it was meant for."""
    truncated = len(data) > LETTER_HEAD_BYTES
    head = data[:LETTER_HEAD_BYTES]
    if truncated:
        try:
            head.decode("utf-8")
        except UnicodeDecodeError as exc:
            if exc.reason == "unexpected end of data":  # cut inside a character
                head = head[:exc.start]
    original, encoding = _as_text(head)
    return DeadLetter(stage=stage, reason=f"line {line}: {refusal.reason}",
                      tenant_id=tenant_id, original=original,
                      original_encoding=encoding,  # type: ignore[arg-type]
                      original_truncated=truncated, original_size=len(data),
                      original_sha256=hashlib.sha256(data).hexdigest(), topic=topic)
