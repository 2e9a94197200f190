"""The lane gate: batch work goes in only when live is idle, live never waits, and the
batch lane's wait is bounded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Literal

import pytest
from faststream.kafka import KafkaBroker

from consumers.subscription import subscribe_stage
from pipeline.analysis.normalize import normalize
from pipeline.config import Settings
from pipeline.kafka.lanes import LaneGate
from pipeline.kafka.messaging import Record
from pipeline.stages.common import LaneTopics
from schemas.messages import NormalizedAlert

ROOT = Path(__file__).parents[2]
IDLE = 0.05


async def batch_turn_after(gate: LaneGate) -> float:
    """Seconds until the gate lets a batch in."""
    started = time.monotonic()
    async with gate.batch():
        return time.monotonic() - started


async def test_batch_goes_straight_in_when_live_never_ran() -> None:
    gate = LaneGate(live_idle_s=IDLE, max_wait_s=5)
    assert await batch_turn_after(gate) < IDLE
    assert gate.batch_turns == 1 and gate.forced_turns == 0


async def test_batch_waits_for_the_live_batch_and_then_for_live_to_be_idle() -> None:
    gate = LaneGate(live_idle_s=IDLE, max_wait_s=5)
    live_ended = asyncio.Event()
    entered_at: list[float] = []

    async def live_batch() -> None:
        async with gate.live():
            await asyncio.sleep(0.2)
        live_ended.set()
        entered_at.append(time.monotonic())

    live = asyncio.create_task(live_batch())
    await asyncio.sleep(0.01)
    assert gate.live_busy
    waited = await batch_turn_after(gate)
    batch_in = time.monotonic()
    await live
    assert live_ended.is_set()
    assert waited >= 0.2 - 0.02, "the batch must not start while a live batch is handled"
    assert batch_in - entered_at[0] >= IDLE * 0.9, "live must have been idle briefly first"
    assert gate.forced_turns == 0


async def test_a_burst_of_live_batches_keeps_batch_out_between_them() -> None:
    gate = LaneGate(live_idle_s=0.5, max_wait_s=5)
    order: list[str] = []

    async def live_burst() -> None:
        for _ in range(4):  # gaps of 20 ms between live batches, far shorter than idle
            async with gate.live():
                await asyncio.sleep(0.05)
            order.append("live")
            await asyncio.sleep(0.02)

    async def batch() -> None:
        await asyncio.sleep(0.01)
        async with gate.batch():
            order.append("batch")

    await asyncio.gather(live_burst(), batch())
    assert order == ["live"] * 4 + ["batch"]


async def test_live_never_waits_for_the_gate_even_during_a_batch() -> None:
    gate = LaneGate(live_idle_s=IDLE, max_wait_s=5)
    async with gate.batch():
        started = time.monotonic()
        async with gate.live():
            assert time.monotonic() - started < 0.01


async def test_the_wait_is_bounded_under_unbroken_live_load() -> None:
    gate = LaneGate(live_idle_s=IDLE, max_wait_s=0.3)
    stop = asyncio.Event()

    async def endless_live() -> None:
        while not stop.is_set():
            async with gate.live():
                await asyncio.sleep(0.02)

    live = asyncio.create_task(endless_live())
    await asyncio.sleep(0.01)
    try:
        waited = await batch_turn_after(gate)
    finally:
        stop.set()
        await live
    assert 0.3 - 0.02 <= waited < 1.0, "batch must go in after max_wait_s, not starve"
    assert gate.forced_turns == 1


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        LaneGate(max_wait_s=0)
    with pytest.raises(ValueError):
        LaneGate(live_idle_s=-1)


def test_a_gate_wait_longer_than_the_poll_interval_allows_is_refused() -> None:
    async def handle(records: list[Record]) -> None:
        return None

    async def handle_letter(record: Record, reason: str) -> None:
        return None

    with pytest.raises(ValueError, match="max_poll_interval"):
        subscribe_stage(KafkaBroker("127.0.0.1:1"), Settings(), "embed", ["t.batch"], handle,
                        dead_letter=handle_letter, max_poll_interval_ms=60_000, lane="batch",
                        gate=LaneGate(max_wait_s=45))


def alert(priority: Literal["live", "batch"]) -> NormalizedAlert:
    line = (ROOT / "samples" / "wazuh-alerts.jsonl").read_bytes().splitlines()[0]
    return normalize(line, tenant_id="t", priority=priority)


def test_outputs_follow_the_alert_lane() -> None:
    topics = LaneTopics("alerts.embedded", "alerts.embedded.batch")
    assert topics.for_alert(alert("live")) == "alerts.embedded"
    assert topics.for_alert(alert("batch")) == "alerts.embedded.batch"
    assert LaneTopics("verdicts").for_alert(alert("batch")) == "verdicts"


async def test_batch_waits_until_every_live_batch_of_the_process_is_done() -> None:
    gate = LaneGate(live_idle_s=IDLE, max_wait_s=5)
    done: list[str] = []

    async def live_batch(name: str, seconds: float) -> None:
        async with gate.live():  # e.g. live normalize and live explain at once
            await asyncio.sleep(seconds)
        done.append(name)

    async def batch(stage: str) -> None:
        await asyncio.sleep(0.01)
        async with gate.batch(stage):
            done.append(stage)

    await asyncio.gather(live_batch("live-normalize", 0.05), live_batch("live-explain", 0.3),
                         batch("embed-batch"), batch("explain-batch"))
    assert done[:2] == ["live-normalize", "live-explain"]
    assert sorted(done[2:]) == ["embed-batch", "explain-batch"]
