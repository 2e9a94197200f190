"""Fixtures of the stage tests (tests/unit/stages/harness.py says what is real and what is
faked)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.analysis.normalize import normalize
from pipeline.config import BatchLaneSettings, KafkaSettings, Settings
from pipeline.kafka.lanes import LaneGate
from schemas.messages import NormalizedAlert
from tests.unit.stages.harness import Journal

SAMPLES = [line for line in (Path(__file__).parents[3] / "samples" / "wazuh-alerts.jsonl")
           .read_bytes().splitlines() if line.strip()]
TENANT = "acme"


@pytest.fixture
def settings() -> Settings:
    # No idle wait before a batch-lane batch: the lanes are tested, not the gate's timing.
    return Settings(kafka=KafkaSettings(batch_lane=BatchLaneSettings(live_idle_s=0)))


@pytest.fixture
def gate(settings: Settings) -> LaneGate:
    lane = settings.kafka.batch_lane
    return LaneGate(live_idle_s=lane.live_idle_s, max_wait_s=lane.max_wait_s)


@pytest.fixture(params=["live", "batch"])
def lane(request: pytest.FixtureRequest) -> str:
    """Each test that takes it runs on both lanes (the batch lane: backfill)."""
    return str(request.param)


@pytest.fixture
def journal() -> Journal:
    return Journal()


def normalized(index: int = 0, priority: str = "live") -> NormalizedAlert:
    """A sample alert as the normalize stage sends it on."""
    return normalize(SAMPLES[index], tenant_id=TENANT, priority=priority)  # type: ignore[arg-type]
