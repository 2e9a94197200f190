import asyncio
from collections.abc import Sequence

import pytest

from pipeline.router.errors import ContextTooLong, NoHealthyReplica
from pipeline.router.replicas import CircuitBreaker, Pool, Replica, choose_pool, choose_replica
from pipeline.router.usage import BatchingUsageWriter
from schemas.usage import UsageEvent


def pools() -> list[Pool]:
    return [Pool("default", 4096, [Replica("http://a/v1", "default"),
                                   Replica("http://b/v1", "default")]),
            Pool("long-context", 32768, [Replica("http://long/v1", "long-context")])]


def test_pool_by_context_length() -> None:
    assert choose_pool(pools(), 4000).name == "default"
    assert choose_pool(pools(), 9000).name == "long-context"
    with pytest.raises(ContextTooLong) as caught:
        choose_pool(pools(), 40000)
    assert (caught.value.tokens, caught.value.limit) == (40000, 32768)


def test_least_loaded_replica_and_exclusion() -> None:
    pool = pools()[0]
    pool.replicas[0].in_flight_requests = 3
    assert choose_replica(pool, exclude=set()).url == "http://b/v1"
    assert choose_replica(pool, exclude={"http://b/v1"}).url == "http://a/v1"
    with pytest.raises(NoHealthyReplica):
        choose_replica(pool, exclude={"http://a/v1", "http://b/v1"})


def test_circuit_opens_after_threshold_and_half_opens_after_cooldown() -> None:
    breaker = CircuitBreaker(threshold=2, cooldown_s=10)
    breaker.failure(100.0)
    assert breaker.allows(100.0)
    breaker.failure(101.0)
    assert not breaker.allows(105.0)
    assert breaker.allows(111.5)
    breaker.success()
    assert breaker.allows(111.6) and breaker.failures == 0


def event(n: int) -> UsageEvent:
    return UsageEvent(tenant_id="t", model_name="m", pool="default", replica="r",
                      request_id=str(n), input_tokens=n, output_tokens=1, status_code=200)


async def test_usage_writer_batches_and_flushes_on_close() -> None:
    batches: list[int] = []

    async def write(events: Sequence[UsageEvent]) -> int:
        batches.append(len(events))
        return len(events)

    writer = BatchingUsageWriter(write, batch_size=4, interval_s=0.05)
    writer.start()
    for n in range(10):
        writer.record(event(n))  # never awaits: off the request path
    await asyncio.sleep(0.2)
    await writer.close()
    assert sum(batches) == 10 and max(batches) <= 4


def test_the_smallest_request_is_the_shortest_single_message_the_template_renders() -> None:
    from pipeline.config import Settings
    from pipeline.router.router import smallest_request_tokens
    from pipeline.router.tokens import counter_for
    from pipeline.runtime import tokenizer_dir

    counter = counter_for(tokenizer_dir(Settings()))
    floor = smallest_request_tokens(counter)
    # SmolLM2's template adds a default system prompt to a chat without one, so a lone
    # empty user message is not the smallest request: a lone system message is.
    lone_user = counter.count_chat([{"role": "user", "content": ""}])
    assert floor == counter.count_chat([{"role": "system", "content": ""}]) < lone_user
    for chat in ([{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}],
                 [{"role": "user", "content": "\n\n"}], [{"role": "assistant", "content": ""}]):
        assert counter.count_chat(chat) + 1 >= floor  # + at least one output token
