"""alerts.raw → normalize → alerts.normalized; alerts.backfill → normalize →
alerts.normalized.batch (the batch lane); malformed alerts → alerts.dlq."""

from faststream.kafka import KafkaBroker

from consumers.subscription import subscribe_lanes
from pipeline.kafka.lanes import LaneGate
from pipeline.kafka.messaging import Publisher
from pipeline.runtime import Runtime
from pipeline.stages.common import dlq_sink
from pipeline.stages.normalize import NormalizeStage


def register(broker: KafkaBroker, runtime: Runtime, publisher: Publisher,
             gate: LaneGate) -> None:
    s = runtime.settings
    topics = s.kafka.topics
    stage = NormalizeStage(publisher=publisher, pool=runtime.pool,
                           output_topic=topics.normalized,
                           batch_output_topic=topics.normalized_batch,
                           backfill_topic=topics.backfill,
                           dlq_topic=topics.dlq, default_tenant=s.tenants.default_tenant)
    subscribe_lanes(broker, s, stage.name, gate, live_topics=[topics.raw],
                    batch_topics=[topics.backfill], handle=stage.handle,
                    dead_letter=dlq_sink(publisher, topics.dlq, stage.name))
