from __future__ import annotations

import asyncio
import json
from typing import Any

from aiokafka import AIOKafkaConsumer

from pipeline.config import Settings


async def read_topic(settings: Settings, topic: str, *, until: int,
                     timeout_s: float = 300) -> list[dict[str, Any]]:
    """Read a topic from the beginning (no group) until `until` messages or the timeout."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=settings.kafka_bootstrap,
                                group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(found) < until and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    message = json.loads(record.value)
                    message["_headers"] = {k: v.decode() for k, v in record.headers}
                    found.append(message)
    finally:
        await consumer.stop()
    return found
