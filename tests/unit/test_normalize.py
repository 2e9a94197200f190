import base64
import json
from pathlib import Path

import pytest

from pipeline.analysis.normalize import (
    DATA_BYTES_LIMIT,
    DATA_TEXT_LIMIT,
    NormalizationError,
    normalize,
    parse_timestamp,
)

SSH = {
    "timestamp": "2026-11-20T08:14:02.118+0000",
    "rule": {"level": 10, "description": "sshd: brute force", "id": "5712",
             "mitre": {"id": ["T1110"], "tactic": ["Credential Access"]},
             "groups": ["syslog", "sshd", "authentication_failures"], "firedtimes": 3},
    "agent": {"id": "001", "name": "web-01", "ip": "10.0.0.5"},
    "manager": {"name": "wazuh-manager"},
    "id": "1763626442.1234567",
    "full_log": "Nov 20 08:14:01 web-01 sshd[1]: Invalid user paco from 192.0.2.7 port 50022",
    "decoder": {"parent": "sshd", "name": "sshd"},
    "data": {"srcip": "192.0.2.7", "srcport": "50022", "srcuser": "paco"},
    "location": "/var/log/auth.log",
    "an_unknown_field": {"kept": True},
}


def encode(doc: object) -> bytes:
    return json.dumps(doc).encode()


def test_extracts_the_fields_an_analyst_needs() -> None:
    alert = normalize(encode(SSH), tenant_id="acme")
    assert (alert.tenant_id, alert.alert_id, alert.rule_id, alert.rule_level) == (
        "acme", "1763626442.1234567", "5712", 10)
    assert alert.agent_name == "web-01" and alert.entities.src_ip == "192.0.2.7"
    assert alert.entities.src_user == "paco" and alert.wazuh_mitre_ids == ["T1110"]
    assert alert.timestamp is not None and alert.timestamp.year == 2026
    assert alert.raw["an_unknown_field"] == {"kept": True}  # unknown fields are kept


def test_fingerprint_ignores_ids_timestamps_and_ports() -> None:
    again = {**SSH, "id": "1763626499.99", "timestamp": "2026-11-20T09:00:00.000+0000",
             "data": {**SSH["data"], "srcport": "61000"}}  # type: ignore[dict-item]
    first, second = normalize(encode(SSH), tenant_id="t"), normalize(encode(again), tenant_id="t")
    assert first.alert_id != second.alert_id
    assert first.fingerprint == second.fingerprint
    other_source = {**SSH, "data": {**SSH["data"], "srcip": "198.51.100.9"}}  # type: ignore[dict-item]
    assert normalize(encode(other_source), tenant_id="t").fingerprint != first.fingerprint


def test_missing_id_gets_a_stable_hash_id() -> None:
    doc = {k: v for k, v in SSH.items() if k != "id"}
    first = normalize(encode(doc), tenant_id="t")
    assert first.alert_id.startswith("sha256:")
    assert normalize(json.dumps(doc, indent=2).encode(), tenant_id="t").alert_id == first.alert_id


def test_three_x_layout_with_top_level_fields_and_old_timestamp() -> None:
    doc = {"rule": {"level": 5, "id": 5710, "description": "sshd: non-existent user"},
           "srcip": "203.0.113.4", "dstuser": "admin", "timestamp": "2017 Jan 05 14:11:21",
           "agent": {"id": "000", "name": "manager"}}
    alert = normalize(encode(doc), tenant_id="t")
    assert alert.rule_id == "5710" and alert.entities.src_ip == "203.0.113.4"
    assert alert.entities.dst_user == "admin"
    assert alert.timestamp is not None and alert.timestamp.year == 2017


def test_indexer_document_and_active_response_envelopes() -> None:
    indexer = {"_id": "x", "_source": {**SSH, "@timestamp": "2026-11-20T08:14:02.118Z"}}
    assert normalize(encode(indexer), tenant_id="t").rule_id == "5712"
    active_response = {"version": 1, "command": "add", "parameters": {"alert": SSH}}
    assert normalize(encode(active_response), tenant_id="t").alert_id == SSH["id"]


def test_control_characters_are_stripped_and_nul_marked() -> None:
    doc = {**SSH, "full_log": "evil\x1b[31m\x00 text\x07"}
    # NUL is what PostgreSQL cannot store: replaced (visibly), so no two words join.
    assert normalize(encode(doc), tenant_id="t").full_log == "evil[31m\ufffd text"


@pytest.mark.parametrize(("line", "reason"), [
    (b'{"rule": {"level": 5, "id": "5710"', "not valid JSON"),
    (b"[1,2,3]", "expected a JSON object"),
    (b'{"agent": {"id": "001"}}', "field 'rule'"),
    (b'{"rule": {"level": "high", "id": "1"}}', "field 'rule.level'"),
    (b"{}", "field 'rule'"),
    (b"\xff\xfe", "not UTF-8"),
    (b'"just a string"', "expected a JSON object"),
    (b'{"a":' * 900 + b"1" + b"}" * 900, "nested deeper than 64"),
    (b"[" * 10_000 + b"]" * 10_000, "nested deeper than 64"),
    (b'{"rule": {"level": 5, "id": "1"}, "n": ' + b"9" * 5000 + b"}", "digits"),
    (b'{"rule": {"level": 5, "id": "1"}, "n": 1e400}', "beyond the range"),
])
def test_malformed_alerts_raise_a_reason(line: bytes, reason: str) -> None:
    with pytest.raises(NormalizationError) as caught:
        normalize(line, tenant_id="t")
    assert reason in caught.value.reason


def test_bundled_bad_alerts_are_all_rejected() -> None:
    path = Path(__file__).parents[1] / "data" / "bad-alerts.jsonl"
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    assert len(lines) == 5
    for line in lines:
        with pytest.raises(NormalizationError):
            normalize(line, tenant_id="t")


def test_bundled_samples_all_normalize_with_unique_ids() -> None:
    path = Path(__file__).parents[2] / "samples" / "wazuh-alerts.jsonl"
    alerts = [normalize(line, tenant_id="t") for line in path.read_bytes().splitlines()
              if line.strip()]
    assert len(alerts) >= 20
    assert len({a.alert_id for a in alerts}) == len(alerts)
    assert all(a.agent_name and a.timestamp for a in alerts)


@pytest.mark.parametrize("text", ["2022-05-11T12:29:19.905+0000", "2024-01-01T00:00:00Z",
                                  "2017 Jan 05 14:11:21"])
def test_timestamps_parse(text: str) -> None:
    assert parse_timestamp(text) is not None


def test_what_postgresql_cannot_store_is_replaced_and_flagged_with_the_original_kept() -> None:
    line = (b'{"rule": {"level": 5, "id": "5710", "description": "x\\ud800y"}, '
            b'"agent": {"name": "web\\u0000-01"}, "data": {"k\\udfff": ["\\ud83d"]}}')
    alert = normalize(line, tenant_id="t")
    assert alert.rule_description == "x\ufffdy" and alert.agent_name == "web\ufffd-01"
    assert alert.data == {"k\ufffd": ["\ufffd"]}
    assert alert.flags == ["text_sanitized"]
    assert alert.original_b64 is not None and base64.b64decode(alert.original_b64) == line
    alert.model_dump_json().encode("utf-8")  # serializable: no surrogate left anywhere
    # A valid surrogate pair is a real character, kept as it is.
    emoji = normalize(b'{"rule": {"level": 5, "id": "1", "description": "\\ud83d\\ude00"}}',
                      tenant_id="t")
    assert emoji.rule_description == "\U0001f600" and not emoji.flags


def test_an_unreadable_timestamp_is_flagged_not_silently_dropped() -> None:
    alert = normalize(encode({**SSH, "timestamp": "yesterday-ish"}), tenant_id="t")
    assert alert.timestamp is None and alert.flags == ["timestamp_invalid"]
    assert not normalize(encode(SSH), tenant_id="t").flags
    no_time = {k: v for k, v in SSH.items() if k != "timestamp"}
    assert not normalize(encode(no_time), tenant_id="t").flags  # absent is not invalid
    numeric = normalize(encode({**no_time, "@timestamp": 12345}), tenant_id="t")
    assert numeric.timestamp is None and numeric.flags == ["timestamp_invalid"]


def test_an_alert_over_the_size_bound_is_refused_with_its_size() -> None:
    huge = encode({**SSH, "full_log": "x" * (1024 * 1024)})
    with pytest.raises(NormalizationError, match="over the 1,048,576-byte limit"):
        normalize(huge, tenant_id="t")


def test_a_huge_data_field_is_cut_in_data_and_kept_whole_in_raw() -> None:
    # 600 KB in one decoded field (a PowerShell script block) is under ingest's 900 KiB
    # limit; copied whole into `data` beside `raw`, the normalized message was 1.2 MB,
    # over the broker's message size, and the alert was dead-lettered at normalize.
    script = "x" * 600_000
    line = json.dumps({"rule": {"level": 5, "id": "91802", "description": "ps"},
                       "data": {"win": {"eventdata": {"scriptBlockText": script}},
                                "srcip": "10.0.0.1"}}).encode()
    alert = normalize(line, tenant_id="t")
    cut = alert.data["win"]["eventdata"]["scriptBlockText"]
    assert cut.startswith("x" * DATA_TEXT_LIMIT) and cut.endswith("…[truncated]")
    assert alert.data["srcip"] == "10.0.0.1" and alert.flags == ["data_truncated"]
    assert alert.raw["data"]["win"]["eventdata"]["scriptBlockText"] == script
    assert len(alert.model_dump_json().encode()) < len(line) + 64 * 1024


def test_many_fields_in_data_are_bounded_in_all() -> None:
    # 200 fields of 3,900 characters each: every string under the per-string limit,
    # 780 KB in all — the same doubling of the message as one huge field.
    fields = {f"f{i:03}": "y" * 3_900 for i in range(200)}
    line = json.dumps({"rule": {"level": 5, "id": "1", "description": "d"},
                       "data": {"srcip": "10.0.0.1", **fields}}).encode()
    alert = normalize(line, tenant_id="t")
    assert len(json.dumps(alert.data).encode()) <= DATA_BYTES_LIMIT
    assert alert.data["srcip"] == "10.0.0.1" and alert.flags == ["data_truncated"]
    assert alert.raw["data"] == {"srcip": "10.0.0.1", **fields}
    assert len(alert.model_dump_json().encode()) < len(line) + 128 * 1024
