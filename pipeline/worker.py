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
        if health is not None:
            await health.stop()
        await broker.stop()
        await runtime.close()
