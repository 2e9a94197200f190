"""Stage 3: EmbeddedAlert → EnrichedAlert with the nearest runbook chunks and the most
similar past verdicts of the same tenant (pgvector)."""

from __future__ import annotations

import asyncio

import numpy as np
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError

from pipeline.kafka.messaging import Publisher, Record
from pipeline.stages.common import LaneTopics, headers_for, message_key, send_to_dlq
from pipeline.store.runbooks import nearest_chunks
from pipeline.store.verdicts import similar_verdicts
from schemas.messages import EmbeddedAlert, EnrichedAlert


class RetrieveStage:
    name = "retrieve"

    def __init__(self, *, publisher: Publisher, pool: AsyncConnectionPool, output_topic: str,
                 dlq_topic: str, top_k: int, similar_k: int,
                 batch_output_topic: str | None = None) -> None:
        self._publisher = publisher
        self._pool = pool
        self._output = LaneTopics(output_topic, batch_output_topic)
        self._dlq = dlq_topic
        self._top_k = top_k
        self._similar_k = similar_k

    async def handle(self, records: list[Record]) -> None:
        sends = []
        async with self._pool.connection() as conn:
            for record in records:
                try:
                    embedded = EmbeddedAlert.model_validate_json(record.value)
                except ValidationError as exc:
                    sends.append(send_to_dlq(self._publisher, self._dlq, self.name, record,
                                             f"invalid embedded alert: "
                                             f"{exc.errors()[0]['msg']}"))
                    continue
                vector = np.asarray(embedded.embedding, dtype=np.float32)
                alert = embedded.alert
                out = EnrichedAlert(
                    alert=alert, embedding=embedded.embedding,
                    runbooks=await nearest_chunks(conn, vector, self._top_k),
                    similar=await similar_verdicts(conn, alert.tenant_id, vector,
                                                   self._similar_k))
                sends.append(self._publisher.publish(
                    self._output.for_alert(alert), out.model_dump_json().encode(),
                    key=message_key(alert), headers=headers_for(alert)))
            await conn.rollback()  # read-only; end the implicit transaction
        await asyncio.gather(*sends)
