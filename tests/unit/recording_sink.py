"""An in-memory alert sink with a DLQ for unit tests of the line producers (ingest,
tail, backfill): what was published, what was dead-lettered."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.messages import DeadLetter


@dataclass
class RecordingSink:
    topic: str = "alerts.raw"
    max_alert_bytes: int = 4096
    published: list[bytes] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)

    async def publish(self, tenant_id: str, alerts: Sequence[bytes]) -> None:
        assert all(len(a) <= self.max_alert_bytes for a in alerts), "sent an oversized alert"
        self.published.extend(alerts)

    async def dead_letter(self, letter: DeadLetter) -> None:
        self.letters.append(letter)
