"""alerts.normalized → embed (MiniLM) → alerts.embedded."""

from faststream.kafka import KafkaBroker

from consumers.subscription import subscribe_stage
from pipeline.messaging import Publisher
from pipeline.runtime import Runtime
from pipeline.stages.embed import EmbedStage


def register(broker: KafkaBroker, runtime: Runtime, publisher: Publisher) -> None:
    s = runtime.settings
    assert runtime.embedder is not None, "runtime opened without the embed stage"
    stage = EmbedStage(publisher=publisher, embedder=runtime.embedder,
                       output_topic=s.kafka.topics.embedded, dlq_topic=s.kafka.topics.dlq)
    subscribe_stage(broker, s, stage.name, [s.kafka.topics.normalized], stage.handle,
                    max_records=s.embedding.batch_size)
