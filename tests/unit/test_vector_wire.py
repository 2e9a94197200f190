"""schemas/vector.py: an embedding goes out as base64 float32 — exact, ~4× smaller than a
JSON float list — and a reader takes both forms; a malformed packed vector is a
validation error (the stage dead-letters it), never a wrong vector."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from pydantic import ValidationError

from schemas.messages import SCHEMA_VERSION, EmbeddedAlert, EnrichedAlert
from tests.unit.stages.conftest import normalized


def model_vector(seed: int = 7) -> list[float]:
    rng = np.random.default_rng(seed)
    vector = rng.standard_normal(384).astype(np.float32)
    return (vector / np.linalg.norm(vector)).astype(np.float32).tolist()


def test_packed_on_the_wire_exact_and_four_times_smaller() -> None:
    vector = model_vector()
    message = EmbeddedAlert(alert=normalized(1), embedding=vector)
    wire = json.loads(message.model_dump_json())
    assert wire["schema_version"] == SCHEMA_VERSION == 2
    assert isinstance(wire["embedding"], str)
    assert len(wire["embedding"]) * 4 < len(json.dumps(vector))
    back = EmbeddedAlert.model_validate_json(message.model_dump_json())
    assert back.embedding == vector  # float32 in, float32 out: bit for bit
    assert message.model_dump()["embedding"] == vector  # in Python still a list


def test_a_version_1_float_list_is_still_read() -> None:
    vector = model_vector(3)
    wire = {"schema_version": 1, "alert": json.loads(normalized(2).model_dump_json()),
            "embedding": vector}
    assert EmbeddedAlert.model_validate_json(json.dumps(wire)).embedding == vector
    enriched = EnrichedAlert.model_validate_json(json.dumps(wire))
    assert enriched.embedding == vector


def test_an_enriched_alert_without_a_vector_stays_without() -> None:
    message = EnrichedAlert(alert=normalized(4))
    assert json.loads(message.model_dump_json())["embedding"] is None
    assert EnrichedAlert.model_validate_json(message.model_dump_json()).embedding is None


@pytest.mark.parametrize(("packed", "reason"), [
    ("not base64 at all!", "not base64"),
    (base64.b64encode(b"\x00" * 10).decode(), "not float32"),
    (base64.b64encode(np.array([0.5, np.nan], "<f4").tobytes()).decode(), "NaN"),
    (base64.b64encode(np.zeros(5000, "<f4").tobytes()).decode(), "longer than"),
])
def test_a_malformed_packed_vector_is_refused_with_its_reason(packed: str, reason: str) -> None:
    wire = {"alert": json.loads(normalized(5).model_dump_json()), "embedding": packed}
    with pytest.raises(ValidationError, match=reason):
        EmbeddedAlert.model_validate_json(json.dumps(wire))
