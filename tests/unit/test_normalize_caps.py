"""Every alert under `ingest.max_alert_bytes` gives a normalized message under the broker's
limit: the fields the manager writes are capped (flag `fields_truncated`, `raw` whole),
and a message that still would not fit loses its `data` copy or is refused with its size."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.analysis.normalize import (
    ID_LIMIT,
    LIST_LIMIT,
    NORMALIZED_LIMIT,
    NormalizationError,
    message_size,
    normalize,
)
from pipeline.config import IngestSettings
from tests.unit.test_normalize import SSH, encode

BIG = "x" * 600_000
MAX_ALERT_BYTES = IngestSettings().max_alert_bytes


def set_path(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node[key]
    node[last] = value


def with_value(path: str, value: Any) -> dict[str, Any]:
    doc: dict[str, Any] = copy.deepcopy(SSH)
    set_path(doc, path, value)
    return doc


@pytest.mark.parametrize(("path", "field"), [
    ("manager.name", "manager"), ("decoder.name", "decoder"), ("agent.ip", "agent_ip"),
    ("agent.id", "agent_id"), ("agent.name", "agent_name"), ("rule.id", "rule_id"),
    ("rule.description", "rule_description"),
])
def test_a_600_kb_manager_field_is_cut_and_flagged(path: str, field: str) -> None:
    value = encode(with_value(path, BIG))
    alert = normalize(value, tenant_id="acme")
    kept = getattr(alert, field)
    assert kept.startswith("xxx") and kept.endswith("…[truncated]") and len(kept) < 1000
    assert "fields_truncated" in alert.flags
    assert message_size(alert) < len(value) + 150_000  # raw whole, the copy bounded
    node: Any = alert.raw
    for key in path.split("."):
        node = node[key]
    assert node == BIG  # the original kept whole


def test_ids_are_cut_not_cleaned() -> None:
    """"1\\x002" must not become "12": ids are cut, never stripped."""
    alert = normalize(encode(with_value("agent.id", "00\u00071")), tenant_id="acme")
    assert alert.agent_id == "00\u00071" and "fields_truncated" not in alert.flags


def test_a_huge_alert_id_becomes_a_stable_hash() -> None:
    first = normalize(encode(with_value("id", BIG)), tenant_id="acme")
    second = normalize(encode(with_value("id", BIG)), tenant_id="acme")
    other = normalize(encode(with_value("id", BIG + "y")), tenant_id="acme")
    assert first.alert_id == second.alert_id != other.alert_id
    assert first.alert_id.startswith("sha256:") and len(first.alert_id) < ID_LIMIT + 10


@pytest.mark.parametrize(("path", "field", "count"), [
    ("rule.groups", "rule_groups", 10_000), ("rule.mitre.id", "wazuh_mitre_ids", 20_000),
])
def test_long_lists_are_capped(path: str, field: str, count: int) -> None:
    value = encode(with_value(path, [f"g{n}" for n in range(count)]))
    alert = normalize(value, tenant_id="acme")
    assert getattr(alert, field) == [f"g{n}" for n in range(LIST_LIMIT)]
    assert "fields_truncated" in alert.flags
    assert message_size(alert) < len(value) + 150_000


def test_every_manager_field_at_once_fits() -> None:
    doc: dict[str, Any] = copy.deepcopy(SSH)
    doc["manager"]["name"] = doc["decoder"]["name"] = "m" * 100_000
    doc["agent"] = {"id": "i" * 100_000, "ip": "p" * 100_000, "name": "n" * 100_000}
    doc["rule"] |= {"id": "r" * 100_000, "description": "d" * 100_000,
                    "groups": ["g" * 100] * 1000, "mitre": {"id": ["T1"] * 15_000}}
    value = encode(doc)
    assert len(value) < MAX_ALERT_BYTES
    assert message_size(normalize(value, tenant_id="acme")) <= NORMALIZED_LIMIT


def test_a_message_that_would_not_fit_loses_its_data_copy() -> None:
    # ~900 KiB: raw alone fits; raw + the 64 KiB `data` copy would not.
    doc = with_value("data", {f"k{n}": "v" * 3000 for n in range(25)})
    doc["full_log"] = "L" * (MAX_ALERT_BYTES - len(encode(doc)) - 100)
    value = encode(doc)
    assert len(value) < MAX_ALERT_BYTES
    alert = normalize(value, tenant_id="acme")
    assert alert.data == {} and "data_truncated" in alert.flags
    assert message_size(alert) <= NORMALIZED_LIMIT


def test_numbers_written_out_past_the_limit_are_refused_with_the_size() -> None:
    # 1e15 is 4 bytes in the alert and 18 once re-serialized (1000000000000000.0).
    doc = with_value("an_unknown_field", [1e15] * 60_000)
    value = json.dumps(doc).replace("1000000000000000.0", "1e15").encode()
    assert len(value) < MAX_ALERT_BYTES
    with pytest.raises(NormalizationError, match=r"over the 960,000-byte message limit"):
        normalize(value, tenant_id="acme")


FIELDS = ["manager.name", "decoder.name", "agent.ip", "agent.id", "agent.name", "rule.id",
          "rule.description", "full_log", "location", "data.srcuser", "id"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(FIELDS), st.integers(1, 400_000), max_size=6),
       st.integers(0, 12_000), st.sampled_from(["x", "é", "\u4e2d", "\U0001f600", '"']))
def test_any_alert_under_the_ingest_limit_fits_or_is_refused_with_a_reason(
        sizes: dict[str, int], groups: int, char: str) -> None:
    doc: dict[str, Any] = copy.deepcopy(SSH)
    for path, size in sizes.items():
        set_path(doc, path, char * size)
    doc["rule"]["groups"] = [f"group{n}" for n in range(groups)]
    value = json.dumps(doc, ensure_ascii=False).encode()
    if len(value) >= MAX_ALERT_BYTES:
        return  # refused by every producer before it reaches normalize
    try:
        alert = normalize(value, tenant_id="acme")
    except NormalizationError as exc:
        assert "message limit" in exc.reason
        return
    assert message_size(alert) <= NORMALIZED_LIMIT
