"""Settings of the services the pipeline talks to: Kafka (topics, lanes) and PostgreSQL."""

from __future__ import annotations

from pydantic import Field, SecretStr

from pipeline.config.base import Frozen


class Topics(Frozen):
    raw: str = "alerts.raw"
    backfill: str = "alerts.backfill"
    normalized: str = "alerts.normalized"
    embedded: str = "alerts.embedded"
    enriched: str = "alerts.enriched"
    # The batch lane (pipeline/kafka/lanes.py): backfill alerts travel on twins of the
    # inter-stage topics, so they never sit in front of live alerts.
    normalized_batch: str = "alerts.normalized.batch"
    embedded_batch: str = "alerts.embedded.batch"
    enriched_batch: str = "alerts.enriched.batch"
    verdicts: str = "verdicts"
    dlq: str = "alerts.dlq"
    partitions: int = 3

    def all(self) -> list[str]:
        return [self.raw, self.backfill, self.normalized, self.embedded, self.enriched,
                self.normalized_batch, self.embedded_batch, self.enriched_batch,
                self.verdicts, self.dlq]


class BatchLaneSettings(Frozen):
    """How each stage lets its batch lane in (pipeline/kafka/lanes.py): only after live has
    been idle `live_idle_s`, or after waiting `max_wait_s` (never starved), in small
    batches so a live alert waits at most one of them."""

    live_idle_s: float = Field(default=0.5, ge=0)
    max_wait_s: float = Field(default=30.0, gt=0)
    max_records: int = Field(default=8, ge=1)
    explain_max_records: int = Field(default=4, ge=1)
    # How long a batch-lane consumer's fetch waits for records (kafka.fetch_max_wait_ms is
    # the live lane's). Tansu answers an empty fetch only at the end of the wait, and each
    # costs it and its S3 storage ~2 ms of CPU: the three idle batch-lane consumers polled
    # 6 times a second at 500 ms (issue 15). Backfill is not latency-bound: it waits up to
    # this long to be picked up after an idle spell; while records flow, fetches answer
    # at once.
    fetch_max_wait_ms: int = Field(default=5000, ge=10, le=30_000)


class KafkaSettings(Frozen):
    bootstrap_servers: str | None = None
    group_prefix: str = "secanalyst"
    # Tansu (the embedded broker) rejects InitProducerId; turn on for Apache Kafka.
    enable_idempotence: bool = False
    # At most this many records a batch of a stage that sets no size of its own (normalize;
    # embed: embedding.batch_size, retrieve: retrieval.max_batch_records). An upper bound:
    # a live trickle is handled as it comes. 128 rather than 32: a burst of 400 alerts in
    # 4 batches instead of 13, each batch one produce request and one commit (objects
    # written on the S3-backed embedded broker): in the pipeline bench's distinct run
    # produce requests 28 → 20 and commits 23 → 16, normalize's p95 944 ms on a loaded
    # machine (issue 15).
    max_batch_records: int = Field(default=128, ge=1)
    # How long a live-lane consumer's fetch waits for records. Apache Kafka answers as soon
    # as records arrive; Tansu answers at the end of the wait, so on the embedded broker
    # this is also how late an idle stage picks up new records (issue 15); each empty
    # fetch costs the S3-backed broker ~2 ms of CPU.
    fetch_max_wait_ms: int = Field(default=500, ge=10, le=5000)
    # The stages' producer batches: the broker's work (on Tansu with S3 storage, objects
    # written to SeaweedFS) is per record batch, not per record. aiokafka's default batch
    # (16 KiB) holds one embedded alert (~9 KB): a batch a record cost the broker and its
    # storage ~6 ms CPU a record, 512 KiB batches ~0.6 (docs/benchmarks.md, issue 15).
    producer_linger_ms: int = Field(default=5, ge=0)
    producer_batch_bytes: int = Field(default=512 * 1024, ge=16 * 1024, le=1024 * 1024)
    topics: Topics = Topics()
    batch_lane: BatchLaneSettings = BatchLaneSettings()


class DatabaseSettings(Frozen):
    url: SecretStr | None = None
    pool_min_size: int = 1
    pool_max_size: int = 8
