"""Stage 3: EmbeddedAlert → EnrichedAlert with the nearest runbook chunks and the most
similar past verdicts of the same tenant (pgvector)."""

from __future__ import annotations

import asyncio

import numpy as np
from psycopg_pool import AsyncConnectionPool

from pipeline.kafka.messaging import Publisher, Record
from pipeline.stages.common import LaneTopics, decode_batch, headers_for, message_key
from pipeline.store.runbooks import nearest_chunks_many
from pipeline.store.verdicts import similar_verdicts_many
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
        batch, sends = decode_batch(records, EmbeddedAlert, what="embedded alert",
                                    publisher=self._publisher, dlq_topic=self._dlq,
                                    stage=self.name)
        if batch:
            # Two round trips per batch, not two per alert (issue 15: batch every hop).
            vectors = [np.asarray(e.embedding, dtype=np.float32) for e in batch]
            async with self._pool.connection() as conn:
                runbooks = await nearest_chunks_many(conn, vectors, self._top_k)
                similar = await similar_verdicts_many(
                    conn, [(e.alert.tenant_id, v) for e, v in zip(batch, vectors, strict=True)],
                    self._similar_k)
                await conn.rollback()  # read-only; end the implicit transaction
            for embedded, passages, past in zip(batch, runbooks, similar, strict=True):
                alert = embedded.alert
                out = EnrichedAlert(alert=alert, embedding=embedded.embedding,
                                    runbooks=passages, similar=past)
                sends.append(self._publisher.publish(
                    self._output.for_alert(alert), out.model_dump_json().encode(),
                    key=message_key(alert), headers=headers_for(alert)))
        await asyncio.gather(*sends)
