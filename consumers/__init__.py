"""One small FastStream module per stage; each wires a topic to a stage of `pipeline/`."""

from __future__ import annotations

from collections.abc import Collection

from faststream.kafka import KafkaBroker

from consumers import embed, explain, normalize, retrieve
from pipeline.kafka.lanes import LaneGate
from pipeline.kafka.messaging import Publisher
from pipeline.runtime import STAGES, Runtime

_REGISTRARS = {"normalize": normalize.register, "embed": embed.register,
               "retrieve": retrieve.register, "explain": explain.register}


def register_stages(broker: KafkaBroker, runtime: Runtime, stages: Collection[str],
                    publisher: Publisher) -> None:
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; choose from {', '.join(STAGES)}")
    # One gate for the whole process: its stages share the CPU (and, in explain, the LLM),
    # so batch work anywhere waits while live work is handled anywhere (pipeline/kafka/lanes.py).
    lane = runtime.settings.kafka.batch_lane
    gate = LaneGate(live_idle_s=lane.live_idle_s, max_wait_s=lane.max_wait_s)
    for stage in STAGES:
        if stage in stages:
            _REGISTRARS[stage](broker, runtime, publisher, gate)
