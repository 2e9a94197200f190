"""alerts.enriched (live) and alerts.enriched.batch (batch lane) → explain (storm reuse or
router → vLLM) → verdicts table + topic. Batch-lane alerts keep priority "batch" in the
router's admission queue too (pipeline/analysis/explain.py)."""

from faststream.kafka import KafkaBroker

from consumers.subscription import subscribe_lanes
from pipeline.kafka.lanes import LaneGate
from pipeline.kafka.messaging import Publisher
from pipeline.runtime import Runtime
from pipeline.stages.common import dlq_sink
from pipeline.stages.explain import ExplainOptions, ExplainStage


def register(broker: KafkaBroker, runtime: Runtime, publisher: Publisher,
             gate: LaneGate) -> None:
    s = runtime.settings
    topics = s.kafka.topics
    assert runtime.router is not None, "runtime opened without the explain stage"
    options = ExplainOptions(max_tokens=s.llm.max_output_tokens, temperature=s.llm.temperature,
                             concurrency=s.llm.concurrency, extra_body=dict(s.llm.extra_body),
                             retrieval=s.retrieval, storm=s.storm,
                             task_size=s.llm.task_size)
    stage = ExplainStage(publisher=publisher, pool=runtime.pool, router=runtime.router,
                         output_topic=topics.verdicts, dlq_topic=topics.dlq, options=options)
    # A batch of LLM calls can take minutes on CPU: allow it between polls. The batch
    # lane takes a few alerts at a time: a live alert shares the LLM with at most those.
    subscribe_lanes(broker, s, stage.name, gate, live_topics=[topics.enriched],
                    batch_topics=[topics.enriched_batch], handle=stage.handle,
                    dead_letter=dlq_sink(publisher, topics.dlq, stage.name),
                    max_records=max(s.llm.concurrency * 4, 64),
                    batch_max_records=s.kafka.batch_lane.explain_max_records,
                    max_poll_interval_ms=30 * 60 * 1000)
