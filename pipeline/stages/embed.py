"""Stage 2: NormalizedAlert → EmbeddedAlert (MiniLM vector of what the alert is about)."""

from __future__ import annotations

import asyncio

from pipeline.analysis.embedding import Embedder, alert_text
from pipeline.kafka.messaging import Publisher, Record
from pipeline.stages.common import LaneTopics, decode_batch, headers_for, message_key
from schemas.messages import EmbeddedAlert, NormalizedAlert


class EmbedStage:
    name = "embed"

    def __init__(self, *, publisher: Publisher, embedder: Embedder, output_topic: str,
                 dlq_topic: str, batch_output_topic: str | None = None) -> None:
        self._publisher = publisher
        self._embedder = embedder
        # The live and batch lanes share the model and its cache (not thread-safe): one
        # batch at a time, so a live batch waits for at most one small batch-lane batch.
        self._model_lock = asyncio.Lock()
        self._output = LaneTopics(output_topic, batch_output_topic)
        self._dlq = dlq_topic

    async def handle(self, records: list[Record]) -> None:
        alerts, sends = decode_batch(records, NormalizedAlert, what="normalized alert",
                                     publisher=self._publisher, dlq_topic=self._dlq,
                                     stage=self.name)
        if alerts:
            # The model is CPU-bound: keep it off the event loop.
            # Keyed by fingerprint: the alerts of a storm share their incident's vector
            # (their texts differ only in timestamps, ports and counters).
            async with self._model_lock:
                vectors = await asyncio.to_thread(
                    self._embedder.embed, [alert_text(a) for a in alerts],
                    [f"{a.tenant_id}:{a.fingerprint}" for a in alerts])
            for alert, vector in zip(alerts, vectors, strict=True):
                out = EmbeddedAlert(alert=alert, embedding=vector.tolist())
                sends.append(self._publisher.publish(
                    self._output.for_alert(alert), out.model_dump_json().encode(),
                    key=message_key(alert), headers=headers_for(alert)))
        await asyncio.gather(*sends)
