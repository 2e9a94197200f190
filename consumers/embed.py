"""alerts.normalized → embed (MiniLM) → alerts.embedded, and the same on the batch lane
(alerts.normalized.batch → alerts.embedded.batch)."""

from faststream.kafka import KafkaBroker

from consumers.subscription import subscribe_lanes
from pipeline.kafka.lanes import LaneGate
from pipeline.kafka.messaging import Publisher
from pipeline.runtime import Runtime
from pipeline.stages.common import dlq_sink
from pipeline.stages.embed import EmbedStage


def register(broker: KafkaBroker, runtime: Runtime, publisher: Publisher,
             gate: LaneGate) -> None:
    s = runtime.settings
    topics = s.kafka.topics
    assert runtime.embedder is not None, "runtime opened without the embed stage"
    stage = EmbedStage(publisher=publisher, embedder=runtime.embedder,
                       output_topic=topics.embedded, batch_output_topic=topics.embedded_batch,
                       dlq_topic=topics.dlq, publish_chunk=s.embedding.publish_chunk)
    subscribe_lanes(broker, s, stage.name, gate, live_topics=[topics.normalized],
                    batch_topics=[topics.normalized_batch], handle=stage.handle,
                    dead_letter=dlq_sink(publisher, topics.dlq, stage.name),
                    max_records=s.embedding.batch_size)
