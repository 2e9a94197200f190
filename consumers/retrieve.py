"""alerts.embedded → retrieve (pgvector) → alerts.enriched."""

from faststream.kafka import KafkaBroker

from consumers.subscription import subscribe_stage
from pipeline.messaging import Publisher
from pipeline.runtime import Runtime
from pipeline.stages.retrieve import RetrieveStage


def register(broker: KafkaBroker, runtime: Runtime, publisher: Publisher) -> None:
    s = runtime.settings
    stage = RetrieveStage(publisher=publisher, pool=runtime.pool,
                          output_topic=s.kafka.topics.enriched, dlq_topic=s.kafka.topics.dlq,
                          top_k=s.retrieval.top_k, similar_k=s.retrieval.similar_verdicts)
    subscribe_stage(broker, s, stage.name, [s.kafka.topics.embedded], stage.handle)
