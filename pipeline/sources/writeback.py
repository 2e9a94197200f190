"""Verdict write-back into Wazuh 4.x: each verdict of a tenant that opted in
(`ingest.writeback_tenants`) is sent to the manager's queue socket as
`1:secanalyst:{json}`, as Wazuh's own VirusTotal integration sends its results; the rules
in deploy/wazuh/secanalyst_rules.xml turn it into an alert in the Wazuh dashboard.

The socket is a Unix datagram socket owned by wazuh-analysisd, so this runs on the
manager host (`secanalyst wazuh-writeback`): the consumer in consumers/writeback.py reads
the verdicts topic with its own group and commits after the batch is written (at least
once). A manager that cannot be reached is the world's failure (ManagerUnreachable, a
ConnectionError: the batch waits and is retried); a message the socket refuses is the
verdict's (dead-lettered).
"""

from __future__ import annotations

import errno
import json
import socket
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger(__name__)
LOCATION = "secanalyst"
MAX_SUMMARY = 1000
# analysisd reads at most OS_MAXSTR (65536) bytes of a message; stay well below.
MAX_EVENT_BYTES = 60_000


def writeback_event(verdict: dict[str, Any]) -> bytes:
    """The queue message for one verdict (the JSON of the verdicts topic)."""
    attack = [t.get("id") for t in verdict.get("attack", []) if isinstance(t, dict)]
    facts = verdict.get("facts")
    facts = facts if isinstance(facts, dict) else {}
    rejected = [f"{c.get('name')}: {c.get('reason')}" for c in verdict.get("checks") or []
                if isinstance(c, dict) and not c.get("passed", True)]
    fields: dict[str, Any] = {
        # Facts first: built without the model, true whatever it said.
        "facts": str(facts.get("sentence") or "")[:MAX_SUMMARY],
        "tenant_id": verdict.get("tenant_id"), "alert_id": verdict.get("alert_id"),
        "rule_id": verdict.get("rule_id"), "rule_level": verdict.get("rule_level"),
        "severity": verdict.get("severity"), "status": verdict.get("status"),
        "summary": str(verdict.get("summary", ""))[:MAX_SUMMARY],
        "attack": attack, "review_reason": verdict.get("review_reason"),
        "rejected_claims": rejected[:8],
        "next_steps": list(verdict.get("next_steps", []))[:5]}
    body = {"integration": "secanalyst", "secanalyst": fields}
    message = f"1:{LOCATION}:{json.dumps(body, separators=(',', ':'))}".encode()
    if len(message) > MAX_EVENT_BYTES:
        fields["next_steps"], fields["rejected_claims"] = [], []
        message = f"1:{LOCATION}:{json.dumps(body, separators=(',', ':'))}".encode()
    return message


class ManagerUnreachable(ConnectionError):
    """analysisd's queue socket is absent, refuses or was closed: the manager is down or
    restarting, not the verdict's fault (pipeline/kafka/transient.py retries it)."""


class QueueSocket:
    """Sends datagrams to analysisd's queue; reconnects once when the manager restarted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.connect(str(self.path))
        return sock

    def send(self, message: bytes) -> None:
        for attempt in (1, 2):
            try:
                if self._sock is None:
                    self._sock = self._connect()
                self._sock.send(message)
                return
            except OSError as exc:
                self.close()
                if attempt == 2:
                    if exc.errno == errno.EMSGSIZE:  # this message: too big for the socket
                        raise
                    raise ManagerUnreachable(f"Wazuh queue socket {self.path}: {exc}") from exc

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def readiness(self) -> str:
        """"ok" while the manager's queue socket is there (the write-back's /readyz)."""
        try:
            if stat.S_ISSOCK(self.path.stat().st_mode):
                return "ok"
            return f"{self.path} is not a socket"
        except OSError as exc:
            return (f"no queue socket at {self.path} ({exc.strerror}): is the Wazuh "
                    "manager running on this host, its queue/sockets folder mounted?")


def write_verdicts(queue: QueueSocket, values: Iterable[bytes], tenants: set[str]) -> int:
    """Write the verdicts of the opted-in tenants; return how many were written."""
    written = 0
    for value in values:
        try:
            verdict = json.loads(value)
        except ValueError:
            log.warning("writeback_skipped_invalid_verdict")
            continue
        if not isinstance(verdict, dict) or verdict.get("tenant_id") not in tenants:
            continue
        queue.send(writeback_event(verdict))
        written += 1
    return written
