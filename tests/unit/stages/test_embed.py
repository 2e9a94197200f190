"""consumers/embed.py through FastStream's TestKafkaBroker: a normalized alert in → the
embedded alert on the next topic of its lane (keyed by tenant + fingerprint, the stage's
headers), then the commit; a record that is not a normalized alert goes to the DLQ with
its reason and original bytes while the rest go on.

The embedder (the runtime's MiniLM model) is replaced by `KeyedEmbedder`, a stand-in at
`Embedder.embed`'s boundary: a vector derived from each alert's cache key, so the test
can tell which vector went with which alert."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np

from consumers import embed as embed_consumer
from pipeline.analysis.embedding import alert_text
from pipeline.config import BatchLaneSettings, EmbeddingSettings, KafkaSettings, Settings
from pipeline.kafka.lanes import LaneGate
from schemas.messages import EmbeddedAlert
from tests.unit.stages import harness
from tests.unit.stages.conftest import TENANT, normalized

DIMENSIONS = 384


class KeyedEmbedder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str], keys: Sequence[str] | None = None) -> np.ndarray:
        assert keys is not None and len(keys) == len(texts)
        self.calls.append(list(keys))
        return np.stack([vector_for(key) for key in keys])


def vector_for(key: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")
    vector = np.random.default_rng(seed).standard_normal(DIMENSIONS).astype(np.float32)
    return vector / np.linalg.norm(vector)


STAGE = harness.StageUnderTest("embed", embed_consumer.register)


async def test_alert_embedded_and_published_on_its_lane_then_committed(
        settings: Settings, gate: LaneGate, journal: harness.Journal, lane: str) -> None:
    alert = normalized(2, priority=lane)
    embedder = KeyedEmbedder()
    out = await STAGE.through_lane(settings, gate, journal, lane,
                                   alert.model_dump_json().encode(), alert, embedder=embedder)
    key = f"{TENANT}:{alert.fingerprint}"
    assert embedder.calls == [[key]]  # one incident, one cached vector
    embedded = EmbeddedAlert.model_validate_json(out.value)
    assert embedded.alert == alert
    assert np.allclose(embedded.embedding, vector_for(key))
    assert journal.kinds() == ["publish", "commit"]


async def test_a_record_that_is_not_a_normalized_alert_is_dead_lettered(
        settings: Settings, gate: LaneGate, journal: harness.Journal) -> None:
    topics = settings.kafka.topics
    good = [normalized(i).model_dump_json().encode() for i in (0, 1)]
    bad = b'{"alert_id": "x", "tenant_id": "acme"}'
    async with STAGE.wired(settings, gate, journal, embedder=KeyedEmbedder()) as broker:
        await broker.publish_batch(good[0], bad, good[1], topic=topics.normalized,
                                   headers={"tenant_id": TENANT})
    (letter_message,) = journal.on(topics.dlq)
    letter = json.loads(letter_message.value)
    assert letter["stage"] == "embed"
    assert letter["reason"].startswith("invalid normalized alert: ")
    assert letter["original"].encode() == bad and letter["tenant_id"] == TENANT
    # Different keys, so no order between them (they may land on different partitions).
    assert sorted(EmbeddedAlert.model_validate_json(d.value).alert.alert_id
                  for d in journal.on(topics.embedded)) == sorted(
        normalized(i).alert_id for i in (0, 1))
    assert journal.committed_after_all_output()


async def test_a_batch_is_encoded_a_chunk_at_a_time_longest_first_one_key_in_order(
        journal: harness.Journal) -> None:
    """publish_chunk 2: each model call takes 2 texts, longest first, but the alerts of
    one incident (key) stay in one call, in their order; each is published once, then
    the commit."""
    settings = Settings(kafka=KafkaSettings(batch_lane=BatchLaneSettings(live_idle_s=0)),
                        embedding=EmbeddingSettings(publish_chunk=2))
    gate = LaneGate(live_idle_s=0, max_wait_s=30)
    storm = [normalized(0).model_copy(update={"alert_id": f"storm-{n}"}) for n in range(3)]
    alerts = [normalized(1), *storm, normalized(2)]
    embedder = KeyedEmbedder()
    async with STAGE.wired(settings, gate, journal, embedder=embedder) as broker:
        await broker.publish_batch(*(a.model_dump_json().encode() for a in alerts),
                                   topic=settings.kafka.topics.normalized,
                                   headers={"tenant_id": TENANT})
    texts = {f"{TENANT}:{a.fingerprint}": len(alert_text(a)) for a in alerts}
    storm_key = f"{TENANT}:{storm[0].fingerprint}"
    # The storm's 3 alerts in one call (their sends start together, in their order:
    # aiokafka keeps that order on the partition; the in-memory test broker does not).
    assert [storm_key] * 3 in embedder.calls
    assert all(len(call) <= 3 for call in embedder.calls)
    lengths = [texts[key] for call in embedder.calls for key in call]
    assert lengths == sorted(lengths, reverse=True)
    published = [EmbeddedAlert.model_validate_json(d.value).alert.alert_id
                 for d in journal.on(settings.kafka.topics.embedded)]
    assert sorted(published) == sorted(a.alert_id for a in alerts)
    assert journal.committed_after_all_output()
