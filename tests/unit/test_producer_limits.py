"""Every producer path survives every alert: the bounded decoder, the dead letter of a
refused line, `secanalyst ingest`'s line loop, and POST /ingest/wazuh's refusals (a 4xx
naming the item, nothing published)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Iterator
from typing import cast

import pytest
from aiokafka import AIOKafkaProducer
from fastapi.testclient import TestClient

from pipeline.analysis.safe_json import JSONRejected, iter_array, loads_bounded
from pipeline.config import IngestSettings
from pipeline.kafka.alert_guard import LETTER_HEAD_BYTES, AlertRefused, refused_letter, screen_alert
from pipeline.kafka.producer import KafkaAlertSink
from pipeline.sources.ingest_file import IngestReport, numbered_lines, send_lines
from tests.unit.recording_sink import RecordingSink
from tests.unit.test_ingest_endpoint import HEADERS, FakeSink, ingest_client

DEEP = b"[" * 10_000 + b"]" * 10_000


@pytest.fixture
def sink() -> FakeSink:
    return FakeSink()


@pytest.fixture
def client(sink: FakeSink) -> Iterator[TestClient]:
    with ingest_client(sink, IngestSettings(max_body_bytes=100_000,
                                            max_decompressed_bytes=100_000,
                                            max_alert_bytes=8192)) as test_client:
        yield test_client


@pytest.mark.parametrize(("text", "kind"), [
    (DEEP, "too_deep"), (b"[" * 65 + b"]" * 65, "too_deep"), (b"9" * 5000, "number_too_long"),
    (b"1e400", "number_out_of_range"), (b"-1e400", "number_out_of_range"),
    (b"NaN", "invalid_json"), (b'{"a": 1', "invalid_json"), (b"\xff{}", "not_utf8"),
    (b'{"a": 1}\n{"b": 2}', "invalid_json"),
])
def test_hostile_json_is_a_clean_refusal(text: bytes, kind: str) -> None:
    with pytest.raises(JSONRejected) as refused:
        loads_bounded(text)
    assert refused.value.kind == kind and refused.value.message


def test_bounded_decoder_keeps_what_json_keeps() -> None:
    assert loads_bounded(b"[" * 64 + b"]" * 64) is not None  # 64 levels are fine
    assert loads_bounded(' {"a": [1, 2.5, "\\ud800"], "a": 2} ') == {"a": 2}
    assert list(iter_array(' [ {"a": 1}, 2 ] ')) == [{"a": 1}, 2]
    with pytest.raises(JSONRejected):
        list(iter_array("[1, 2,]"))


def test_screen_alert_wants_an_object_within_the_size_limit() -> None:
    assert screen_alert(b'{"rule": {}}', max_bytes=100) == {"rule": {}}
    for data, kind in [(b"[1]", "not_object"), (b'{"x": "' + b"y" * 200 + b'"}', "too_large"),
                       (DEEP, "too_large")]:
        with pytest.raises(AlertRefused) as refused:
            screen_alert(data, max_bytes=100)
        assert refused.value.kind == kind
    assert AlertRefused("too_large", "x").http_status == 413
    assert AlertRefused("too_deep", "x").http_status == 400


def test_letter_of_an_oversized_line_keeps_its_head_hash_and_size_and_fits() -> None:
    data = ("é" * 1_000_000).encode()  # 2 MB; 64 KiB would cut inside a character
    letter = refused_letter("ingest", data, AlertRefused("too_large", "too big"),
                            tenant_id="acme", topic="alerts.raw", line=7)
    assert letter.reason == "line 7: too big" and letter.original_truncated
    assert letter.original_encoding == "utf-8" and data.startswith(letter.original.encode())
    assert LETTER_HEAD_BYTES - 4 < len(letter.original.encode()) <= LETTER_HEAD_BYTES
    assert letter.original_size == len(data)
    assert letter.original_sha256 == hashlib.sha256(data).hexdigest()
    assert len(letter.model_dump_json()) < 900 * 1024
    binary = refused_letter("tail", b"\xff" * 10, AlertRefused("not_utf8", "bad"),
                            tenant_id="acme", topic="alerts.raw", line=1)
    assert binary.original_encoding == "base64" and not binary.original_truncated
    assert base64.b64decode(binary.original) == b"\xff" * 10


def test_ingest_sends_every_other_line_and_dead_letters_the_refused() -> None:
    lines = [b'{"a": 1}\n', b"\n", b'{"big": "' + b"x" * 5000 + b'"}\n', DEEP + b"\n",
             b'{"a": 2}\n', b"[1, 2]\n", b'{"a": 3}']
    sink = RecordingSink()
    report = asyncio.run(send_lines(sink, numbered_lines(lines), tenant_id="acme", chunk=2))
    assert (report.sent, report.dead_lettered, report.last_line) == (3, 3, 7)
    assert sink.published == [b'{"a": 1}', b'{"a": 2}', b'{"a": 3}']
    assert [letter.reason.split(":")[0] for letter in sink.letters] == [
        "line 3", "line 4", "line 6"]
    assert all(letter.stage == "ingest" for letter in sink.letters)


def test_ingest_report_counts_what_was_sent_before_a_broker_failure() -> None:
    class Failing(RecordingSink):
        async def publish(self, tenant_id: str, alerts: object) -> None:
            raise ConnectionError("broker gone")

    report = IngestReport()
    with pytest.raises(ConnectionError):
        asyncio.run(send_lines(Failing(), numbered_lines([b"{}"]), tenant_id="acme",
                               report=report))
    assert report.sent == 0 and report.last_line == 1


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"[" * 10_000 + b"]" * 10_000, 400, "item 0: nested deeper"),
    (b'[{"a": 1}, {"n": ' + b"1" * 5000 + b"}]", 400, "item 1: a number has more digits"),
    (b'{"rule": {"level": 1e400}}', 400, "beyond the range of a float"),
    (b'{"a": 1}\n{"b": ' + b"[" * 2000 + b"]" * 2000 + b"}", 400, "line 2: nested deeper"),
    (b'{"alerts": [{"a": 1}, ' + b"[" * 100 + b"]" * 100 + b"]}", 400, "nested deeper"),
    (b'[{"a": 1}, {"a": NaN}]', 400, "item 1: NaN is not a JSON value"),
])
def test_hostile_bodies_are_400_naming_the_item_and_publish_nothing(
        client: TestClient, sink: FakeSink, body: bytes, status: int, words: str) -> None:
    answer = client.post("/ingest/wazuh", content=body, headers=HEADERS)
    assert answer.status_code == status, answer.text
    assert words in answer.json()["error"]["message"]
    assert sink.published == []


def test_an_oversized_alert_refuses_the_whole_request_with_413(
        client: TestClient, sink: FakeSink) -> None:
    small = {"id": "1", "rule": {"id": "1"}}
    big = {"id": "2", "full_log": "x" * 9000}  # the fixture's per-alert limit is 8,192
    answer = client.post("/ingest/wazuh", json=[small, small, big, small], headers=HEADERS)
    assert answer.status_code == 413, answer.text
    error = answer.json()["error"]
    assert error["message"].startswith("item 2: the alert is") and error["param"] == "item 2"
    assert sink.published == []  # the alerts before it were not published either


def test_lone_surrogates_and_control_characters_are_accepted_as_valid_json(
        client: TestClient, sink: FakeSink) -> None:
    body = b'{"id": "1", "full_log": "a\\ud800b\\u0000c\\u001b"}'
    answer = client.post("/ingest/wazuh", content=body, headers=HEADERS)
    assert answer.status_code == 202, answer.text
    published = sink.published[0][1][0]
    assert json.loads(published)["full_log"] == "a\ud800b\x00c\x1b"


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes, list[tuple[str, bytes]]]] = []

    def append(self, *, timestamp: None, key: None, value: bytes,
               headers: list[tuple[str, bytes]]) -> object:
        self.records.append((value, headers))
        return object()


class _Producer:
    """Records sends (single messages and record batches); each future is already
    acknowledged."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, list[tuple[str, bytes]]]] = []

    @staticmethod
    def _acknowledged() -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def send(self, topic: str, value: bytes, *, key: bytes | None = None,
                   headers: list[tuple[str, bytes]]) -> asyncio.Future[None]:
        self.sent.append((topic, value, headers))
        return self._acknowledged()

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1, 2}

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *,
                         partition: int) -> asyncio.Future[None]:
        self.sent.extend((topic, value, headers) for value, headers in batch.records)
        return self._acknowledged()


def test_kafka_sink_checks_every_size_before_sending_any_and_letters_go_to_the_dlq() -> None:
    producer = _Producer()
    sink = KafkaAlertSink(cast(AIOKafkaProducer, producer), "raw", dlq_topic="dlq",
                          max_alert_bytes=2048)

    async def run() -> None:
        with pytest.raises(AlertRefused, match="item 1: the alert is 3,000 bytes"):
            await sink.publish("acme", [b"{}", b"x" * 3000, b"{}"])
        assert producer.sent == []  # nothing of a refused batch is produced
        await sink.publish("acme", [b"{}"])
        letter = refused_letter("tail", b"x" * 3000, AlertRefused("too_large", "big"),
                                tenant_id="acme", topic="raw", line=3)
        await sink.dead_letter(letter)

    asyncio.run(run())
    assert [(topic, dict(headers)["tenant_id"]) for topic, _, headers in producer.sent] == [
        ("raw", b"acme"), ("dlq", b"acme")]
    assert json.loads(producer.sent[1][1])["reason"] == "line 3: big"
