"""alerts.enriched → explain (router → vLLM) → verdicts table + verdicts topic."""

from faststream.kafka import KafkaBroker

from consumers.subscription import subscribe_stage
from pipeline.messaging import Publisher
from pipeline.runtime import Runtime
from pipeline.stages.explain import ExplainStage


def register(broker: KafkaBroker, runtime: Runtime, publisher: Publisher) -> None:
    s = runtime.settings
    assert runtime.router is not None, "runtime opened without the explain stage"
    stage = ExplainStage(publisher=publisher, pool=runtime.pool, router=runtime.router,
                         output_topic=s.kafka.topics.verdicts, dlq_topic=s.kafka.topics.dlq,
                         max_tokens=s.llm.max_output_tokens, temperature=s.llm.temperature,
                         concurrency=s.llm.concurrency, extra_body=dict(s.llm.extra_body))
    # A batch of LLM calls can take minutes on CPU: allow it between polls.
    subscribe_stage(broker, s, stage.name, [s.kafka.topics.enriched], stage.handle,
                    max_records=s.llm.concurrency * 2, max_poll_interval_ms=30 * 60 * 1000)
