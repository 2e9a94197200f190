"""alerts.raw + alerts.backfill → normalize → alerts.normalized (or alerts.dlq)."""

from faststream.kafka import KafkaBroker

from consumers.subscription import subscribe_stage
from pipeline.messaging import Publisher
from pipeline.runtime import Runtime
from pipeline.stages.normalize import NormalizeStage


def register(broker: KafkaBroker, runtime: Runtime, publisher: Publisher) -> None:
    s = runtime.settings
    topics = s.kafka.topics
    stage = NormalizeStage(publisher=publisher, pool=runtime.pool,
                           output_topic=topics.normalized, backfill_topic=topics.backfill,
                           dlq_topic=topics.dlq, default_tenant=s.tenants.default_tenant)
    subscribe_stage(broker, s, stage.name, [topics.raw, topics.backfill], stage.handle)
