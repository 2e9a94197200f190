"""Topic creation: every topic of the design, created if missing (idempotent)."""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tenacity import AsyncRetrying, stop_after_delay, wait_fixed

from pipeline.config import Settings


async def ensure_topics(settings: Settings, *, wait_s: float = 30.0) -> list[str]:
    topics = settings.kafka.topics
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    async for attempt in AsyncRetrying(stop=stop_after_delay(wait_s), wait=wait_fixed(0.5),
                                       reraise=True):
        with attempt:
            await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics.all() if t not in existing]
        if missing:
            await admin.create_topics([NewTopic(name, topics.partitions, 1)
                                       for name in missing])
        return missing
    finally:
        await admin.close()
