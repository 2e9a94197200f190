"""Topic creation: every topic of the design, created if missing (idempotent)."""

from __future__ import annotations

import asyncio

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from tenacity import AsyncRetrying, stop_after_delay, wait_fixed

from pipeline.config import Settings

log = structlog.get_logger(__name__)


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


async def keep_topics(settings: Settings, *, interval_s: float = 10.0) -> None:
    """Recreate missing topics every `interval_s` for as long as the process runs: a
    broker on memory storage comes back from a restart with none, and consumers would
    fail on UnknownTopicOrPartition until someone created them again."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            created = await ensure_topics(settings, wait_s=interval_s)
        except Exception as exc:  # broker down: the next round tries again
            log.warning("topic_check_failed", error=repr(exc))
            continue
        if created:
            log.warning("topics_recreated", topics=created)


async def delete_topics(settings: Settings) -> list[str]:
    """Delete the topics of `settings` that exist — for a test session's or a bench run's
    own topics (named by a run id) when it ends; never called on the deployment's. Left
    behind, hundreds of them made every consumer's topic check list them all."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in settings.kafka.topics.all() if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()
