"""Prometheus metrics of the stage consumers, served on the worker's /metrics
(pipeline/worker_health.py) from prometheus-client's default registry — the router's
metrics (LLM tokens, TTFT; pipeline/router/metrics.py) are in the same registry.

Counted in two places only: the batch runner (records in and out, batch latency, lag)
and `send_to_dlq` (dead letters, whoever sends them). Dead letters are labelled by a
reason *class* from a fixed list (`reason_class`): the reason itself is free text, partly
from the alert, and would make a label of unbounded cardinality.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

_BATCH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                  60.0, 120.0, 300.0, 900.0)

RECORDS_IN = Counter("secanalyst_stage_records_in", "Records a stage consumed (committed "
                     "batches; a retried batch counts once it is committed).",
                     ["stage", "lane"])
RECORDS_OUT = Counter("secanalyst_stage_records_out", "Records a stage finished without "
                      "dead-lettering them.", ["stage", "lane"])
DEAD_LETTERS = Counter("secanalyst_stage_dead_letters", "Records sent to the DLQ, by "
                       "reason class.", ["stage", "reason"])
BATCH_SECONDS = Histogram("secanalyst_stage_batch_seconds", "Time to handle and commit a "
                          "batch (outcome: committed|retried).", ["stage", "lane", "outcome"],
                          buckets=_BATCH_BUCKETS)
CONSUMER_LAG = Gauge("secanalyst_stage_consumer_lag", "Records behind the log end on a "
                     "partition after the consumer's last batch from it (high watermark of "
                     "its own fetch − next offset).", ["stage", "lane", "topic", "partition"])

# First match wins; anything else is "other". Exception names (the batch runner's reasons
# are "TypeName: message") come from the code, so they are a bounded set too.
_CLASSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("too_large", re.compile(r"^the (normalized )?alert is [\d,]+ bytes")),
    ("not_an_object", re.compile(r"^expected a JSON object")),
    ("invalid_field", re.compile(r"^field '")),
    ("invalid_message", re.compile(r"^invalid (normalized|embedded|enriched) alert")),
    ("invalid_utf8", re.compile(r"not UTF-8")),
    ("context_too_long", re.compile(r"context|too long", re.IGNORECASE)),
    ("quota", re.compile(r"quota", re.IGNORECASE)),
    ("invalid_json", re.compile(r"JSON|nested|number|string|escape|control character",
                                re.IGNORECASE)),
)
_EXCEPTION = re.compile(r"^([A-Z][A-Za-z0-9_]{0,63}): ")


def reason_class(reason: str) -> str:
    """A bounded label for a dead letter's free-text reason."""
    if match := _EXCEPTION.match(reason):
        return match.group(1)
    for name, pattern in _CLASSES:
        if pattern.search(reason):
            return name
    return "other"


@dataclass
class BatchCount:
    """The dead letters sent while one batch is handled (so out = in − dead letters)."""

    dead_letters: int = 0


_batch: contextvars.ContextVar[BatchCount | None] = contextvars.ContextVar(
    "secanalyst_batch_count", default=None)


def start_batch() -> tuple[BatchCount, contextvars.Token[BatchCount | None]]:
    count = BatchCount()
    return count, _batch.set(count)


def end_batch(token: contextvars.Token[BatchCount | None]) -> None:
    _batch.reset(token)


def count_dead_letter(stage: str, reason: str) -> None:
    DEAD_LETTERS.labels(stage, reason_class(reason)).inc()
    count = _batch.get()
    if count is not None:
        count.dead_letters += 1


def observe_batch(stage: str, lane: str, *, records: int, dead_letters: int,
                  seconds: float, committed: bool) -> None:
    BATCH_SECONDS.labels(stage, lane, "committed" if committed else "retried").observe(
        seconds)
    if committed:
        RECORDS_IN.labels(stage, lane).inc(records)
        RECORDS_OUT.labels(stage, lane).inc(max(0, records - dead_letters))


def observe_lag(stage: str, lane: str, consumer: Any,
                next_offsets: Iterable[tuple[str, int, int]]) -> None:
    """Lag of each (topic, partition, next offset) of a committed batch: the high watermark
    of the consumer's last fetch minus the next offset. No broker round trip (and not
    `end_offsets`: Tansu's ListOffsets is one short after a multi-record batch)."""
    highwater = getattr(consumer, "highwater", None)
    if highwater is None:
        return
    from aiokafka import TopicPartition

    for topic, partition, next_offset in next_offsets:
        try:
            end = highwater(TopicPartition(topic, partition))
        except Exception:  # partition revoked meanwhile: no figure this time
            continue
        if end is not None:
            CONSUMER_LAG.labels(stage, lane, topic, str(partition)).set(
                max(0, end - next_offset))
