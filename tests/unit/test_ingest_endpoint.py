"""POST /ingest/wazuh with a fake key checker and sink: body shapes, limits, the all-or-
nothing refusal, the tenant from the key, and 202 only after the sink acknowledged."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field

import pytest
from aiokafka.errors import KafkaTimeoutError
from fastapi.testclient import TestClient

from pipeline.config import IngestSettings, Settings
from pipeline.web.ingest import IngestResources, create_ingest_app
from pipeline.web.ingest_body import BodyError, gunzip_limited, parse_alerts

KEY = "sak_0123456789ab_" + "x" * 43
HEADERS = {"Authorization": f"Bearer {KEY}"}
ALERT = {"id": "1.1", "rule": {"id": "5710", "level": 5}}


@dataclass
class FakeAuth:
    async def tenant_for(self, key: str) -> str | None:
        return "acme" if key == KEY else None


@dataclass
class FakeSink:
    fail: bool = False
    published: list[tuple[str, list[bytes]]] = field(default_factory=list)

    async def publish(self, tenant_id: str, alerts: Sequence[bytes]) -> None:
        if self.fail:
            raise KafkaTimeoutError()
        self.published.append((tenant_id, list(alerts)))


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@contextmanager
def ingest_client(sink: FakeSink, limits: IngestSettings) -> Iterator[TestClient]:
    """The ingest app with the fake key checker and `sink`, under `limits`."""
    @asynccontextmanager
    async def resources(_: Settings) -> AsyncIterator[IngestResources]:
        yield IngestResources(auth=FakeAuth(), sink=sink)

    with TestClient(create_ingest_app(Settings(ingest=limits), resources)) as test_client:
        yield test_client


@pytest.fixture
def client(sink: FakeSink) -> Iterator[TestClient]:
    with ingest_client(sink, IngestSettings(max_body_bytes=20_000,
                                            max_decompressed_bytes=50_000,
                                            max_alerts_per_request=5)) as test_client:
        yield test_client


def test_one_alert_is_accepted_for_the_keys_tenant(client: TestClient, sink: FakeSink) -> None:
    answer = client.post("/ingest/wazuh", json={**ALERT, "tenant_id": "other"},
                         headers={**HEADERS, "X-Secanalyst-Tenant": "other"})
    assert answer.status_code == 202 and answer.json() == {"accepted": 1, "tenant": "acme"}
    assert sink.published[0][0] == "acme"


def test_missing_or_wrong_key_is_401(client: TestClient, sink: FakeSink) -> None:
    assert client.post("/ingest/wazuh", json=ALERT).status_code == 401
    wrong = client.post("/ingest/wazuh", json=ALERT, headers={"Authorization": "Bearer x"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert sink.published == []


def test_array_lines_and_gzip(client: TestClient, sink: FakeSink) -> None:
    assert client.post("/ingest/wazuh", json=[ALERT, ALERT], headers=HEADERS).json()[
        "accepted"] == 2
    lines = (json.dumps(ALERT) + "\n\n" + json.dumps(ALERT) + "\n").encode()
    answer = client.post("/ingest/wazuh", content=gzip.compress(lines), headers={
        **HEADERS, "Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
    assert answer.status_code == 202 and answer.json()["accepted"] == 2
    assert json.loads(sink.published[-1][1][0]) == ALERT


def test_refusals_publish_nothing(client: TestClient, sink: FakeSink) -> None:
    cases = [
        (client.post("/ingest/wazuh", json=[ALERT, 3], headers=HEADERS), 400, "item 1"),
        (client.post("/ingest/wazuh", json=[ALERT] * 6, headers=HEADERS), 413, "6 alerts"),
        (client.post("/ingest/wazuh", content=b"x" * 30_000, headers=HEADERS), 413,
         "larger than 20000"),
        (client.post("/ingest/wazuh", content=b"{}", headers={
            **HEADERS, "Content-Type": "text/plain"}), 415, "content type"),
        (client.post("/ingest/wazuh", content=b"{}", headers={
            **HEADERS, "Content-Encoding": "br"}), 415, "content encoding"),
    ]
    for answer, status, words in cases:
        assert answer.status_code == status, answer.text
        assert words in answer.json()["error"]["message"]
    assert sink.published == []


def test_unacknowledged_publish_is_503_with_retry_after(client: TestClient,
                                                        sink: FakeSink) -> None:
    sink.fail = True
    answer = client.post("/ingest/wazuh", json=ALERT, headers=HEADERS)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"


def test_parse_alerts_shapes_and_errors() -> None:
    one = json.dumps(ALERT).encode()
    assert parse_alerts(one, "application/json") == [one.replace(b", ", b",").replace(
        b": ", b":")]
    envelope = json.dumps({"alerts": [ALERT, ALERT]}).encode()
    assert len(parse_alerts(envelope, "application/json; charset=utf-8")) == 2
    hits = json.dumps({"hits": {"hits": [{"_source": ALERT}]}}).encode()
    assert json.loads(parse_alerts(hits, "application/json")[0]) == {"_source": ALERT}
    assert len(parse_alerts(one + b"\n" + one, "application/json")) == 2  # JSON lines
    for body, words in [(b"", "empty"), (b"[]", "no alerts"), (b"[{}]", "item 0: empty"),
                        (b'{"a": ', "not valid JSON"), (b"\xff", "not UTF-8"),
                        (b"[null]", "got null")]:
        with pytest.raises(BodyError, match=words):
            parse_alerts(body, "application/json")


def test_gunzip_limits_bombs_and_truncation() -> None:
    assert gunzip_limited(gzip.compress(b"abc"), 10) == b"abc"
    with pytest.raises(BodyError, match="decompressed body") as bomb:
        gunzip_limited(gzip.compress(b"0" * 1_000_000), 1000)
    assert bomb.value.status_code == 413
    with pytest.raises(BodyError, match="truncated"):
        gunzip_limited(gzip.compress(b"x" * 5000)[:-20], 100_000)
    with pytest.raises(BodyError, match="not valid gzip"):
        gunzip_limited(b"plain text", 100)


def test_metrics_count_outcomes_and_alerts(client: TestClient) -> None:
    client.post("/ingest/wazuh", json=[ALERT, ALERT], headers=HEADERS)
    client.post("/ingest/wazuh", json=ALERT)
    text = client.get("/metrics").text
    assert 'secanalyst_ingest_alerts_total{tenant="acme"}' in text
    assert 'secanalyst_ingest_requests_total{outcome="authentication_error"}' in text
