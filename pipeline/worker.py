"""`secanalyst run`: the stage consumers in one process (all four, or the ones asked for)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

import structlog
from faststream.kafka import KafkaBroker

from pipeline.config import Settings
from pipeline.kafka.admin import ensure_topics, keep_topics
from pipeline.runtime import Runtime
from pipeline.shutdown import stop_on_signals
from pipeline.store.migrate import MIGRATE_HINT, pending_migrations
from pipeline.worker_health import HealthServer, WorkerHealth

log = structlog.get_logger(__name__)


class BrokerPublisher:
    """The stages' Publisher protocol over FastStream's Kafka broker."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def publish(self, topic: str, value: bytes, *, key: str,
                      headers: dict[str, str]) -> None:
        await self._broker.publish(value, topic=topic, key=key.encode(), headers=headers)


def build_broker(settings: Settings) -> KafkaBroker:
    return KafkaBroker(settings.kafka_bootstrap, client_id="secanalyst",
                       enable_idempotence=settings.kafka.enable_idempotence,
                       linger_ms=settings.kafka.producer_linger_ms,
                       max_batch_size=settings.kafka.producer_batch_bytes,
                       logger=structlog.get_logger("faststream"),
                       # per-message "Received"/"Processed" lines only at DEBUG
                       log_level=logging.DEBUG)


async def run_worker(settings: Settings, stages: Collection[str],
                     stop: asyncio.Event | None = None) -> None:
    from consumers import register_stages

    await ensure_topics(settings)
    runtime = await Runtime.open(settings, stages)
    broker = build_broker(settings)
    register_stages(broker, runtime, stages, BrokerPublisher(broker))
    stop = stop_on_signals(stop)
    topics = asyncio.create_task(keep_topics(settings))  # after a memory broker's restart
    schema = asyncio.create_task(warn_if_schema_behind(runtime))  # not in the start's way
    health = None
    try:
        if settings.worker.health_port is not None:  # up before the consumers join
            health = HealthServer(WorkerHealth(broker, runtime.pool),
                                  settings.worker.health_host, settings.worker.health_port)
            await health.start()
        await broker.start()
        log.info("worker_started", stages=sorted(stages), kafka=settings.kafka_bootstrap)
        await stop.wait()
    finally:
        log.info("worker_stopping")
        topics.cancel()
        schema.cancel()
        if health is not None:
            await health.stop()
        await broker.stop()
        await runtime.close()


async def warn_if_schema_behind(runtime: Runtime) -> list[str]:
    """Say at start when the database lacks migrations this code needs (a deploy ahead of
    its migration job): the stages wait out what is missing, they do not fail."""
    try:
        pending = await pending_migrations(runtime.pool)
    except Exception as exc:  # unreachable now: the stages' own retries say so
        log.info("schema_check_skipped", error=f"{type(exc).__name__}: {exc}")
        return []
    if pending:
        log.warning("database_schema_behind", pending=pending,
                    hint=f"{MIGRATE_HINT}; until then a batch that needs what is missing "
                         "is retried, never dead-lettered")
    return pending
