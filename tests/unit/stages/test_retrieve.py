"""consumers/retrieve.py through FastStream's TestKafkaBroker: an embedded alert in → the
enriched alert (runbook passages + the tenant's similar verdicts) on the next topic of its
lane, keyed and headed as the stage sets them, then the commit; a record that is not an
embedded alert goes to the DLQ with its reason and original bytes; a database outage
rewinds the batch and commits nothing.

pgvector is replaced at the store functions' boundary (`nearest_chunks_many`,
`similar_verdicts_many`) by `VectorIndex`: fixed passages and verdicts, and the queries it was
asked, so the test sees the alert's own vector, tenant and the configured k reach it."""

from __future__ import annotations

import json

import numpy as np
import psycopg
import pytest

from consumers import retrieve as retrieve_consumer
from pipeline.config import Settings
from pipeline.kafka.lanes import LaneGate
from schemas.messages import (
    EmbeddedAlert,
    EnrichedAlert,
    RunbookCitation,
    SimilarVerdict,
)
from tests.unit.stages import harness
from tests.unit.stages.conftest import TENANT, normalized

PASSAGE = RunbookCitation(chunk_id="ssh-brute-force#2", runbook="ssh-brute-force",
                          title="SSH brute force", heading="Investigate", score=0.82,
                          text="Check the source address against lastb.", wazuh_rules=["5710"])
PAST = SimilarVerdict(alert_id="1.1", rule_id="5710", severity="medium", summary="scan",
                      analyst_status="confirmed", similarity=0.91, score=0.95)


class VectorIndex:
    def __init__(self) -> None:
        self.queries: list[tuple[str, str | None, list[float], int]] = []
        self.down = False

    async def nearest_chunks(self, conn: object, embedding: np.ndarray,
                             limit: int) -> list[RunbookCitation]:
        if self.down:
            raise psycopg.OperationalError("connection to server lost")
        self.queries.append(("runbooks", None, embedding.tolist(), limit))
        return [PASSAGE]

    async def similar_verdicts(self, conn: object, tenant_id: str, embedding: np.ndarray,
                               limit: int) -> list[SimilarVerdict]:
        self.queries.append(("verdicts", tenant_id, embedding.tolist(), limit))
        return [PAST]

    async def nearest_chunks_many(self, conn: object, embeddings: list[np.ndarray],
                                  limit: int) -> list[list[RunbookCitation]]:
        return [await self.nearest_chunks(conn, e, limit) for e in embeddings]

    async def similar_verdicts_many(self, conn: object, queries: list[tuple[str, np.ndarray]],
                                    limit: int) -> list[list[SimilarVerdict]]:
        return [await self.similar_verdicts(conn, t, e, limit) for t, e in queries]


@pytest.fixture
def index(monkeypatch: pytest.MonkeyPatch) -> VectorIndex:
    index = VectorIndex()
    monkeypatch.setattr("pipeline.stages.retrieve.nearest_chunks_many",
                        index.nearest_chunks_many)
    monkeypatch.setattr("pipeline.stages.retrieve.similar_verdicts_many",
                        index.similar_verdicts_many)
    return index


def embedded(index: int, priority: str = "live") -> EmbeddedAlert:
    vector = np.zeros(384, dtype=np.float32)
    vector[index] = 1.0  # a vector of its own per sample
    return EmbeddedAlert(alert=normalized(index, priority), embedding=vector.tolist())


STAGE = harness.StageUnderTest("retrieve", retrieve_consumer.register)


async def test_alert_enriched_and_published_on_its_lane_then_committed(
        settings: Settings, gate: LaneGate, journal: harness.Journal, index: VectorIndex,
        lane: str) -> None:
    given = embedded(3, priority=lane)
    out = await STAGE.through_lane(settings, gate, journal, lane,
                                   given.model_dump_json().encode(), given.alert)
    enriched = EnrichedAlert.model_validate_json(out.value)
    assert (enriched.alert, enriched.embedding) == (given.alert, given.embedding)
    assert (enriched.runbooks, enriched.similar) == ([PASSAGE], [PAST])
    retrieval = settings.retrieval
    assert [(kind, tenant, limit) for kind, tenant, _, limit in index.queries] == [
        ("runbooks", None, retrieval.top_k), ("verdicts", TENANT, retrieval.similar_verdicts)]
    assert all(np.allclose(vector, given.embedding) for _, _, vector, _ in index.queries)
    assert journal.kinds() == ["publish", "commit"]


async def test_a_record_that_is_not_an_embedded_alert_is_dead_lettered(
        settings: Settings, gate: LaneGate, journal: harness.Journal, index: VectorIndex) -> None:
    topics = settings.kafka.topics
    bad = normalized(0).model_dump_json().encode()  # a stage skipped: no embedding
    good = embedded(1).model_dump_json().encode()
    async with STAGE.wired(settings, gate, journal) as broker:
        await broker.publish_batch(bad, good, topic=topics.embedded,
                                   headers={"tenant_id": TENANT})
    (letter_message,) = journal.on(topics.dlq)
    letter = json.loads(letter_message.value)
    assert letter["stage"] == "retrieve"
    assert letter["reason"].startswith("invalid embedded alert: ")
    assert letter["original"].encode() == bad
    assert len(journal.on(topics.enriched)) == 1
    assert journal.committed_after_all_output()


async def test_a_database_outage_rewinds_the_batch_and_commits_nothing(
        settings: Settings, gate: LaneGate, journal: harness.Journal, index: VectorIndex) -> None:
    index.down = True
    await STAGE.assert_rewound(settings, gate, journal,
                               [embedded(i).model_dump_json().encode() for i in (0, 1)], TENANT)


async def test_a_version_1_float_list_is_retrieved_and_a_corrupt_packed_vector_dead_lettered(
        settings: Settings, gate: LaneGate, journal: harness.Journal, index: VectorIndex) -> None:
    """Records written before vectors were packed (schema 1) are still enriched; a packed
    vector that is not float32 values goes to the DLQ, not to pgvector."""
    topics = settings.kafka.topics
    old = embedded(2)
    version_1 = json.dumps({**json.loads(old.model_dump_json()), "schema_version": 1,
                            "embedding": old.embedding}).encode()
    corrupt = json.dumps({**json.loads(embedded(3).model_dump_json()),
                          "embedding": "AAAA" + "AAA="}).encode()  # 5 bytes
    async with STAGE.wired(settings, gate, journal) as broker:
        await broker.publish_batch(version_1, corrupt, topic=topics.embedded,
                                   headers={"tenant_id": TENANT})
    (out,) = journal.on(topics.enriched)
    assert EnrichedAlert.model_validate_json(out.value).embedding == old.embedding
    (letter_message,) = journal.on(topics.dlq)
    letter = json.loads(letter_message.value)
    assert "not float32 values" in letter["reason"]
    assert letter["original"].encode() == corrupt
    assert journal.committed_after_all_output()
