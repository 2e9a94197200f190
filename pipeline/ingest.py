"""`secanalyst ingest FILE`: JSON lines of Wazuh alerts → alerts.raw, one message a line.

Lines are sent as they are: validation is the normalize stage's job, so a malformed line
reaches the DLQ with its reason and original bytes instead of vanishing here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO

from aiokafka import AIOKafkaProducer

from pipeline.config import Settings
from pipeline.messaging import PRIORITY_HEADER, TENANT_HEADER


def alert_lines(stream: IO[bytes]) -> Iterator[bytes]:
    for line in stream:
        line = line.strip()
        if line:
            yield line


async def publish_lines(settings: Settings, lines: Iterable[bytes], *, tenant_id: str,
                        topic: str | None = None, priority: str = "live") -> int:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                                enable_idempotence=settings.kafka.enable_idempotence,
                                linger_ms=5)
    await producer.start()
    headers = [(TENANT_HEADER, tenant_id.encode()), (PRIORITY_HEADER, priority.encode())]
    sent = 0
    try:
        futures = []
        for line in lines:
            futures.append(await producer.send(topic or settings.kafka.topics.raw, line,
                                               key=None, headers=headers))
            sent += 1
        for future in futures:
            await future  # delivered (acks=1 by default; all on real Kafka via config)
    finally:
        await producer.stop()
    return sent
