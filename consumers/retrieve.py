"""alerts.embedded → retrieve (pgvector) → alerts.enriched, and the same on the batch lane
(alerts.embedded.batch → alerts.enriched.batch)."""

from faststream.kafka import KafkaBroker

from consumers.subscription import subscribe_lanes
from pipeline.kafka.lanes import LaneGate
from pipeline.kafka.messaging import Publisher
from pipeline.runtime import Runtime
from pipeline.stages.common import dlq_sink
from pipeline.stages.retrieve import RetrieveStage


def register(broker: KafkaBroker, runtime: Runtime, publisher: Publisher,
             gate: LaneGate) -> None:
    s = runtime.settings
    topics = s.kafka.topics
    stage = RetrieveStage(publisher=publisher, pool=runtime.pool,
                          output_topic=topics.enriched, batch_output_topic=topics.enriched_batch,
                          dlq_topic=topics.dlq, top_k=s.retrieval.top_k,
                          similar_k=s.retrieval.similar_verdicts)
    subscribe_lanes(broker, s, stage.name, gate, live_topics=[topics.embedded],
                    batch_topics=[topics.embedded_batch], handle=stage.handle,
                    dead_letter=dlq_sink(publisher, topics.dlq, stage.name),
                    max_records=s.retrieval.max_batch_records)
