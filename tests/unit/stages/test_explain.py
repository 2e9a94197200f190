"""consumers/explain.py through FastStream's TestKafkaBroker: an enriched alert in (live or
batch lane) → one model call through the router → the verdict stored, then published on
the verdicts topic keyed and headed as the stage sets them, then the commit; a redelivered
alert republishes its stored verdict without a second model call; a record that is not an
enriched alert and an alert the router refuses as too long go to the DLQ with their
reason and original bytes while the rest are explained.

Faked at the runtime resources' boundary: the router (`Model`, the scripted router of
tests/unit/test_explain_gate.py; explain() itself runs for real, checks included) and the
verdicts table (`VerdictsTable` in place of get_verdict_json / insert_verdict /
count_reuse, and find_reusable, the storm lookup, finding nothing to reuse). An outage of
the model server is not driven here: the stage then waits on its circuit for up to
`max_pause_s` (tests/unit/test_circuit.py covers the circuit, tests/reliability the outage)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from consumers import explain as explain_consumer
from pipeline.config import Settings
from pipeline.kafka.lanes import LaneGate
from pipeline.router import ChatRequest, Completion, ContextTooLong
from schemas.messages import EnrichedAlert
from schemas.verdict import Verdict
from tests.unit.stages import harness
from tests.unit.stages.conftest import TENANT, normalized
from tests.unit.test_explain_gate import ScriptedRouter

REPLY = json.dumps({"summary": "Repeated failed SSH logins: likely password guessing.",
                    "steps": [1]})


class Model(ScriptedRouter):
    """The router: one scripted reply, or ContextTooLong for the alert ids in `too_long`."""

    def __init__(self, too_long: frozenset[str] = frozenset()) -> None:
        super().__init__([REPLY])
        self.too_long = too_long

    async def complete(self, request: ChatRequest) -> Completion:
        if request.alert_id in self.too_long:
            raise ContextTooLong(9_000, 8_192)
        return await super().complete(request)


class VerdictsTable:
    def __init__(self, journal: harness.Journal) -> None:
        self.journal = journal
        self.rows: dict[tuple[str, str], str] = {}

    async def get_verdict_json(self, conn: object, tenant_id: str, alert_id: str) -> str | None:
        return self.rows.get((tenant_id, alert_id))

    async def insert_verdict(self, conn: object, verdict: Verdict,
                             embedding: np.ndarray | None = None) -> bool:
        key = (verdict.tenant_id, verdict.alert_id)
        if key in self.rows:
            return False
        self.rows[key] = verdict.model_dump_json()
        self.journal.events.append(("write", verdict.alert_id))
        return True

    async def count_reuse(self, conn: object, tenant_id: str, original_alert_id: str) -> None:
        raise AssertionError("nothing is reused: find_reusable finds nothing here")


@pytest.fixture
def table(journal: harness.Journal, monkeypatch: pytest.MonkeyPatch) -> VerdictsTable:
    table = VerdictsTable(journal)
    for name in ("get_verdict_json", "insert_verdict", "count_reuse"):
        monkeypatch.setattr(f"pipeline.stages.explain.{name}", getattr(table, name))

    async def nothing_to_reuse(*args: object) -> None:
        return None

    monkeypatch.setattr("pipeline.stages.explain.find_reusable", nothing_to_reuse)
    return table


def enriched(index: int, priority: str = "live") -> bytes:
    return EnrichedAlert(alert=normalized(index, priority)).model_dump_json().encode()


STAGE = harness.StageUnderTest("explain", explain_consumer.register)


async def test_alert_explained_stored_published_then_committed(
        settings: Settings, gate: LaneGate, journal: harness.Journal, table: VerdictsTable,
        lane: str) -> None:
    alert = normalized(0, lane)
    model = Model()
    out = await STAGE.through_lane(settings, gate, journal, lane, enriched(0, lane), alert,
                                   router=model)
    verdict = Verdict.model_validate_json(out.value)
    assert (verdict.tenant_id, verdict.alert_id) == (TENANT, alert.alert_id)
    assert out.value.decode() == table.rows[(TENANT, alert.alert_id)]  # stored as published
    (request,) = model.requests
    assert request.priority == ("batch" if lane == "batch" else "standard")
    assert journal.kinds() == ["write", "publish", "commit"]


async def test_a_redelivered_alert_republishes_its_verdict_without_a_model_call(
        settings: Settings, gate: LaneGate, journal: harness.Journal, table: VerdictsTable) -> None:
    topics = settings.kafka.topics
    model = Model()
    async with STAGE.wired(settings, gate, journal, router=model) as broker:
        await broker.publish(enriched(1), topics.enriched, headers={"tenant_id": TENANT})
        await broker.publish(enriched(1), topics.enriched, headers={"tenant_id": TENANT})
    first, again = journal.on(topics.verdicts)
    assert again.value == first.value and len(model.requests) == 1
    assert journal.kinds() == ["write", "publish", "commit", "publish", "commit"]


async def test_a_bad_record_and_a_too_long_alert_are_dead_lettered(
        settings: Settings, gate: LaneGate, journal: harness.Journal, table: VerdictsTable) -> None:
    topics = settings.kafka.topics
    bad = b'{"alert": {"alert_id": 7}}'
    model = Model(too_long=frozenset({normalized(2).alert_id}))
    async with STAGE.wired(settings, gate, journal, router=model) as broker:
        await broker.publish_batch(enriched(0), bad, enriched(2), topic=topics.enriched,
                                   headers={"tenant_id": TENANT})
    letters = {json.loads(d.value)["original"].encode(): json.loads(d.value)
               for d in journal.on(topics.dlq)}
    assert letters.keys() == {bad, enriched(2)}
    assert letters[bad]["reason"].startswith("invalid enriched alert: ")
    assert letters[enriched(2)]["reason"] == str(ContextTooLong(9_000, 8_192))
    assert all(letter["stage"] == "explain" for letter in letters.values())
    assert [Verdict.model_validate_json(d.value).alert_id
            for d in journal.on(topics.verdicts)] == [normalized(0).alert_id]
    assert journal.committed_after_all_output()
