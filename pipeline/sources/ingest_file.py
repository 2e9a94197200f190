"""`secanalyst ingest FILE`: JSON lines of Wazuh alerts → alerts.raw, one message a line.

Every line is screened before it is produced (pipeline/kafka/alert_guard.py): a line over
`ingest.max_alert_bytes`, not UTF-8, not JSON within bounds or not an object goes to
alerts.dlq with its line number and reason, and the lines after it are still sent.
Validating the alert's fields stays the normalize stage's job.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from pipeline.config import Settings
from pipeline.kafka.alert_guard import AlertRefused, screen_alert
from pipeline.kafka.producer import (
    PRODUCER_REQUEST_LIMIT,
    AlertSinkWithDLQ,
    dead_letter_line,
    open_alert_sink,
)


@dataclass
class IngestReport:
    sent: int = 0
    dead_lettered: int = 0
    last_line: int = 0  # the last line handled (sent or dead-lettered)


def alert_lines(stream: IO[bytes]) -> Iterator[bytes]:
    for _, line in numbered_lines(stream):
        yield line


def numbered_lines(stream: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """(line number, line) of the non-blank lines, numbered as in the file."""
    for number, line in enumerate(stream, start=1):
        line = line.strip()
        if line:
            yield number, line


async def ingest_lines(settings: Settings, lines: Iterable[tuple[int, bytes]], *,
                       tenant_id: str, topic: str | None = None, priority: str = "live",
                       report: IngestReport | None = None) -> IngestReport:
    """`send_lines` through a producer of its own to `topic` (default alerts.raw)."""
    async with open_alert_sink(settings, topic or settings.kafka.topics.raw,
                               priority=priority) as sink:
        return await send_lines(sink, lines, tenant_id=tenant_id, report=report)


async def send_lines(sink: AlertSinkWithDLQ, lines: Iterable[tuple[int, bytes]], *,
                     tenant_id: str, chunk: int = 500, report: IngestReport | None = None,
                     ) -> IngestReport:
    """Screen and publish numbered lines in acknowledged chunks; refused lines are
    dead-lettered. `report` (if given) is filled as it goes, so a caller sees how far
    a run got when the broker fails mid-file."""
    report = report if report is not None else IngestReport()
    pending: list[bytes] = []
    for number, data in lines:
        try:
            screen_alert(data, max_bytes=sink.max_alert_bytes)
        except AlertRefused as refusal:
            await dead_letter_line(sink, "ingest", data, refusal, tenant_id=tenant_id,
                                   line=number)
            report.dead_lettered += 1
        else:
            pending.append(data)
        report.last_line = number
        if len(pending) >= chunk:
            await sink.publish(tenant_id, pending)
            report.sent += len(pending)
            pending = []
    if pending:
        await sink.publish(tenant_id, pending)
        report.sent += len(pending)
    return report


async def publish_lines(settings: Settings, lines: Iterable[bytes], *, tenant_id: str,
                        topic: str | None = None, priority: str = "live",
                        chunk: int = 500) -> int:
    """Lines sent exactly as they are, unscreened (only the producer's own size limit):
    for the demo, tests and benches that need malformed alerts on the topic (the normalize
    stage dead-letters them). Acknowledged chunk by chunk, each wait bounded."""
    sent = 0
    async with open_alert_sink(settings, topic or settings.kafka.topics.raw,
                               priority=priority,
                               max_alert_bytes=PRODUCER_REQUEST_LIMIT) as sink:
        pending: list[bytes] = []
        for line in lines:
            pending.append(line)
            if len(pending) >= chunk:
                await sink.publish(tenant_id, pending)
                sent, pending = sent + len(pending), []
        if pending:
            await sink.publish(tenant_id, pending)
            sent += len(pending)
    return sent
