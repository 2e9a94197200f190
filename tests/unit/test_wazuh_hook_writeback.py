"""Verdict write-back: the `1:secanalyst:{json}` message Wazuh's analysisd reads from its
queue socket, sent over a real Unix datagram socket; only opted-in tenants; reconnect
after the manager restarted (socket recreated)."""

from __future__ import annotations

import json
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.sources.writeback import QueueSocket, write_verdicts, writeback_event

VERDICT = {"tenant_id": "acme", "alert_id": "1.2", "rule_id": "5710", "rule_level": 5,
           "severity": "medium", "status": "explained", "summary": "s" * 5000,
           "attack": [{"id": "T1110", "name": "Brute Force", "source": "wazuh"}],
           "next_steps": ["a", "b"], "review_reason": None}


@pytest.fixture
def queue_path() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="wq") as folder:  # short: AF_UNIX path limit
        yield Path(folder) / "queue"


def bind(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(path))
    server.settimeout(5)
    return server


def test_event_format_is_what_the_rules_decode() -> None:
    message = writeback_event(VERDICT)
    assert message.startswith(b"1:secanalyst:{")
    body = json.loads(message.split(b":", 2)[2])
    assert body["integration"] == "secanalyst"  # rule 100900 matches on it
    fields = body["secanalyst"]
    assert (fields["severity"], fields["status"], fields["attack"]) == (
        "medium", "explained", ["T1110"])
    assert len(fields["summary"]) == 1000


def test_only_opted_in_tenants_are_written(queue_path: Path) -> None:
    server = bind(queue_path)
    queue = QueueSocket(queue_path)
    other = json.dumps({**VERDICT, "tenant_id": "globex"}).encode()
    values = [json.dumps(VERDICT).encode(), other, b"{bad"]
    written = write_verdicts(queue, values, {"acme"})
    assert written == 1
    assert json.loads(server.recv(65536).split(b":", 2)[2])["secanalyst"]["alert_id"] == "1.2"
    queue.close()
    server.close()


def test_reconnects_when_the_socket_was_recreated(queue_path: Path) -> None:
    server = bind(queue_path)
    queue = QueueSocket(queue_path)
    queue.send(b"1:secanalyst:{}")
    server.close()
    queue_path.unlink()
    server = bind(queue_path)  # the manager restarted
    queue.send(b"1:secanalyst:{\"n\":2}")
    assert server.recv(100) == b"1:secanalyst:{\"n\":2}"
    queue.close()
    server.close()
    queue_path.unlink()
    with pytest.raises(OSError):
        QueueSocket(queue_path).send(b"x")  # no manager: an error, not a silent drop
