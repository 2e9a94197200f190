"""Publishing alerts to a topic and waiting for the broker's acknowledgement: the one
producer path of the ingest endpoint, backfill and tail."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Protocol

from aiokafka import AIOKafkaProducer

from pipeline.messaging import PRIORITY_HEADER, TENANT_HEADER


def alert_producer(bootstrap_servers: str, *, enable_idempotence: bool,
                   **tuning: object) -> AIOKafkaProducer:
    """A producer whose sends count only once every in-sync replica has them (acks=all):
    an alert is reported accepted only when losing a broker cannot lose it."""
    return AIOKafkaProducer(bootstrap_servers=bootstrap_servers,
                            enable_idempotence=enable_idempotence, acks="all",
                            **tuning)


class AlertSink(Protocol):
    async def publish(self, tenant_id: str, alerts: Sequence[bytes]) -> None:
        """Return once every alert is acknowledged by the broker; raise otherwise."""


class KafkaAlertSink:
    def __init__(self, producer: AIOKafkaProducer, topic: str, *, priority: str = "live",
                 timeout_s: float = 30.0) -> None:
        self._producer = producer
        self._topic = topic
        self._priority = priority.encode()
        self._timeout_s = timeout_s

    async def publish(self, tenant_id: str, alerts: Sequence[bytes]) -> None:
        headers = [(TENANT_HEADER, tenant_id.encode()), (PRIORITY_HEADER, self._priority)]
        futures = [await self._producer.send(self._topic, value, headers=headers)
                   for value in alerts]
        if futures:
            await asyncio.wait_for(asyncio.gather(*futures), self._timeout_s)
