"""Stage 2: NormalizedAlert → EmbeddedAlert (MiniLM vector of what the alert is about)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from pipeline.analysis.embedding import Embedder, alert_text
from pipeline.kafka.messaging import Publisher, Record
from pipeline.stages.common import LaneTopics, decode_batch, headers_for, message_key
from schemas.messages import EmbeddedAlert, NormalizedAlert


def encode_chunks(texts: list[str], keys: list[str], size: int) -> list[list[int]]:
    """The batch's indices in chunks of about `size`, longest text first (each model call
    pads to its longest). The alerts of one key stay together, in their order, in one
    chunk: their outputs share a partition downstream, and sends started together keep
    their order."""
    first: dict[str, tuple[int, int]] = {}
    for index, (text, key) in enumerate(zip(texts, keys, strict=True)):
        first.setdefault(key, (-len(text), index))
    order = sorted(range(len(texts)), key=lambda i: first[keys[i]])  # stable: keys in order
    chunks: list[list[int]] = []
    for i in order:
        if chunks and (len(chunks[-1]) < size or keys[chunks[-1][-1]] == keys[i]):
            chunks[-1].append(i)
        else:
            chunks.append([i])
    return chunks


class EmbedStage:
    name = "embed"

    def __init__(self, *, publisher: Publisher, embedder: Embedder, output_topic: str,
                 dlq_topic: str, batch_output_topic: str | None = None,
                 publish_chunk: int = 64) -> None:
        self._publisher = publisher
        self._embedder = embedder
        # The live and batch lanes share the model and its cache (not thread-safe): one
        # batch at a time, so a live batch waits for at most one small batch-lane batch.
        self._model_lock = asyncio.Lock()
        self._output = LaneTopics(output_topic, batch_output_topic)
        self._dlq = dlq_topic
        self._chunk = publish_chunk

    async def handle(self, records: list[Record]) -> None:
        alerts, letters = decode_batch(records, NormalizedAlert, what="normalized alert",
                                       publisher=self._publisher, dlq_topic=self._dlq,
                                       stage=self.name)
        sends: list[Awaitable[None]] = [asyncio.ensure_future(d) for d in letters]
        try:
            if alerts:
                async with self._model_lock:
                    await self._embed_and_send(alerts, sends)
        finally:
            # Every send ends before the batch is done (the runner commits after this,
            # or handles the batch again after a failure).
            results = await asyncio.gather(*sends, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _embed_and_send(self, alerts: list[NormalizedAlert],
                              sends: list[Awaitable[None]]) -> None:
        """Encode the batch a chunk at a time and send each chunk's outputs on while the
        model encodes the next: the model is not idle while they are acknowledged, and
        retrieve starts on the first chunk instead of after the whole batch."""
        texts = [alert_text(a) for a in alerts]
        # Keyed by fingerprint: the alerts of a storm share their incident's vector
        # (their texts differ only in timestamps, ports and counters).
        keys = [f"{a.tenant_id}:{a.fingerprint}" for a in alerts]
        for chunk in encode_chunks(texts, keys, self._chunk):
            # The model is CPU-bound: keep it off the event loop.
            vectors = await asyncio.to_thread(self._embedder.embed, [texts[i] for i in chunk],
                                              [keys[i] for i in chunk])
            for i, vector in zip(chunk, vectors, strict=True):
                alert = alerts[i]
                out = EmbeddedAlert(alert=alert, embedding=vector.tolist())
                sends.append(asyncio.ensure_future(self._publisher.publish(
                    self._output.for_alert(alert), out.model_dump_json().encode(),
                    key=message_key(alert), headers=headers_for(alert))))
