"""An embedding on the wire: base64 of its little-endian float32 values.

As a JSON list of floats a 384-dimension MiniLM vector is ~8.4 KB, three quarters of an
embedded alert; every byte goes through the broker and its S3 storage twice (alerts.embedded,
alerts.enriched). Packed it is 2 KB and exact: the model's vectors are float32 already.
In Python the field stays a list of floats; a JSON list (schema version 1) is still read.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

# Far above any sentence model's width; bounds what an attacker-written value can cost.
MAX_DIMENSIONS = 4096
_FLOAT32 = np.dtype("<f4")


def pack(values: list[float]) -> str:
    return base64.b64encode(np.asarray(values, dtype=_FLOAT32).tobytes()).decode("ascii")


def unpack(value: Any) -> Any:
    """A packed vector's floats; anything else is left to the list[float] validation."""
    if not isinstance(value, str | bytes):
        return value
    if len(value) > 4 * MAX_DIMENSIONS * 4 // 3 + 4:
        raise ValueError(f"packed vector longer than {MAX_DIMENSIONS} dimensions")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"packed vector is not base64: {exc}") from None
    if len(raw) % _FLOAT32.itemsize:
        raise ValueError(f"packed vector of {len(raw)} bytes: not float32 values")
    floats = np.frombuffer(raw, dtype=_FLOAT32)
    if not np.isfinite(floats).all():
        raise ValueError("packed vector holds NaN or infinity")
    return floats.tolist()


PackedVector = Annotated[
    list[float],
    BeforeValidator(unpack),
    PlainSerializer(pack, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "contentEncoding": "base64",
                    "description": "little-endian float32 values"}, mode="serialization"),
]
