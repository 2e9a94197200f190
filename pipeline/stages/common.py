from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from pipeline.kafka.messaging import (
    ALERT_HEADER,
    PRIORITY_HEADER,
    SCHEMA_HEADER,
    TENANT_HEADER,
    DeadLetterSink,
    Publisher,
    Record,
    dead_letter,
)
from pipeline.telemetry import trace_headers
from pipeline.telemetry_metrics import count_dead_letter
from schemas.messages import SCHEMA_VERSION, NormalizedAlert


@dataclass(frozen=True)
class LaneTopics:
    """A stage's output topic in each lane: a batch-priority alert (backfill) goes to the
    batch twin, so it never sits in front of live alerts in the next stage."""

    live: str
    batch: str | None = None

    def for_alert(self, alert: NormalizedAlert) -> str:
        return self.batch if alert.priority == "batch" and self.batch else self.live


def headers_for(alert: NormalizedAlert) -> dict[str, str]:
    """Every output's headers; with the trace context of the record it came from when
    tracing (pipeline/telemetry.py)."""
    return {TENANT_HEADER: alert.tenant_id, ALERT_HEADER: alert.alert_id,
            PRIORITY_HEADER: alert.priority, SCHEMA_HEADER: str(SCHEMA_VERSION),
            **trace_headers(alert.alert_id)}


def message_key(alert: NormalizedAlert) -> str:
    # Keyed by tenant + fingerprint: a storm lands on one partition, in order.
    return f"{alert.tenant_id}:{alert.fingerprint}"


async def send_to_dlq(publisher: Publisher, dlq_topic: str, stage: str, record: Record,
                      reason: str) -> None:
    count_dead_letter(stage, reason)
    letter = dead_letter(stage, record, reason)
    await publisher.publish(dlq_topic, letter.model_dump_json().encode(),
                            key=record.headers.get(TENANT_HEADER, "unknown"),
                            headers={k: v for k, v in record.headers.items()}
                            | {"dlq_stage": stage})


def dlq_sink(publisher: Publisher, dlq_topic: str, stage: str) -> DeadLetterSink:
    """What the batch runner calls to dead-letter a record that failed on its own."""
    return partial(send_to_dlq, publisher, dlq_topic, stage)


Message = TypeVar("Message", bound=BaseModel)


def decode_batch(records: list[Record], model: type[Message], *, what: str,
                 publisher: Publisher, dlq_topic: str, stage: str,
                 ) -> tuple[list[Message], list[Coroutine[Any, Any, None]]]:
    """A batch's records as `model`, and the dead letters (not yet sent) of those that
    are not one, each with the reason."""
    decoded: list[Message] = []
    letters = []
    for record in records:
        try:
            decoded.append(model.model_validate_json(record.value))
        except ValidationError as exc:
            letters.append(send_to_dlq(publisher, dlq_topic, stage, record,
                                       f"invalid {what}: {exc.errors()[0]['msg']}"))
    return decoded, letters
