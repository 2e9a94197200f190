from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

from pipeline.config import Settings


async def read_topic(settings: Settings, topic: str, *, until: int,
                     timeout_s: float = 300,
                     where: Callable[[dict[str, Any]], bool] | None = None,
                     ) -> list[dict[str, Any]]:
    """Read a topic from the beginning (no group) until `until` messages or the timeout.

    `where` keeps only the messages a test waits for, and `until` counts only those: a
    topic shared by the session's tests (the DLQ) holds other tests' messages too, and
    counting them stopped the read before the awaited ones had arrived.
    """
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
                    if where is None or where(message):
                        found.append(message)
    finally:
        await consumer.stop()
    return found
