"""alerts.enriched → explain (storm reuse or router → vLLM) → verdicts table + topic."""

from faststream.kafka import KafkaBroker

from consumers.subscription import subscribe_stage
from pipeline.messaging import Publisher
from pipeline.runtime import Runtime
from pipeline.stages.explain import ExplainOptions, ExplainStage


def register(broker: KafkaBroker, runtime: Runtime, publisher: Publisher) -> None:
    s = runtime.settings
    assert runtime.router is not None, "runtime opened without the explain stage"
    options = ExplainOptions(max_tokens=s.llm.max_output_tokens, temperature=s.llm.temperature,
                             concurrency=s.llm.concurrency, extra_body=dict(s.llm.extra_body),
                             retrieval=s.retrieval, storm=s.storm)
    stage = ExplainStage(publisher=publisher, pool=runtime.pool, router=runtime.router,
                         output_topic=s.kafka.topics.verdicts, dlq_topic=s.kafka.topics.dlq,
                         options=options)
    # A batch of LLM calls can take minutes on CPU: allow it between polls.
    subscribe_stage(broker, s, stage.name, [s.kafka.topics.enriched], stage.handle,
                    max_records=max(s.llm.concurrency * 4, 64),
                    max_poll_interval_ms=30 * 60 * 1000)
