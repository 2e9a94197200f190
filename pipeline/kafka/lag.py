"""Whether the pipeline's consumers are running, and how far behind each stage is, read
from the broker (what `secanalyst dev status` shows). Read-only: nothing here joins a
group, commits or produces.

- Running: the members of each stage's consumer group (DescribeGroups), whoever started
  them (`secanalyst dev up --consumers`, `secanalyst run` in a terminal, a Deployment).
- Lag of a partition: its log end − the group's committed offset (the log start when the
  group has committed nothing: new groups start at the earliest offset).
- The log end is the high watermark of a fetch of the partition's last batch. Tansu's
  ListOffsets (`end_offsets`) answers the last batch's base offset + 1, not the log end
  (see log_end_guard.py), which would hide all but one record of the last batch; on
  Apache Kafka both agree.
- Committed offsets come from OffsetFetch through a consumer of the group that never
  subscribes (so never joins): aiokafka's admin client cannot parse Tansu's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from pipeline.config import Settings


@dataclass(frozen=True)
class GroupLag:
    group: str
    topics: tuple[str, ...]
    members: int  # consumers in the group now (0: nobody consumes)
    state: str  # the broker's word: Stable, Empty, PreparingRebalance, Dead, …
    partitions: int
    lag: int  # records not yet committed, summed over the partitions


@dataclass(frozen=True)
class StageLag:
    stage: str
    live: GroupLag  # the stage's live topic (group `<prefix>-<stage>`)
    batch: GroupLag  # its backfill lane (group `<prefix>-<stage>-batch`)


def stage_topics(settings: Settings) -> dict[str, tuple[str, str]]:
    """Each stage's (live, batch-lane) input topic, as consumers/*.py subscribe them."""
    t = settings.kafka.topics
    return {"normalize": (t.raw, t.backfill), "embed": (t.normalized, t.normalized_batch),
            "retrieve": (t.embedded, t.embedded_batch),
            "explain": (t.enriched, t.enriched_batch)}


async def stage_lags(settings: Settings, *, timeout_s: float = 15.0) -> list[StageLag]:
    """Members and lag of every stage's two groups (consumers/subscription.py names them)."""
    prefix = settings.kafka.group_prefix
    wanted = [(f"{prefix}-{stage}{suffix}", topic)
              for stage, topics in stage_topics(settings).items()
              for suffix, topic in zip(("", "-batch"), topics, strict=True)]
    async with asyncio.timeout(timeout_s):
        lags = await groups_lag(settings.kafka_bootstrap, dict(wanted))
    by_group = {lag.group: lag for lag in lags}
    return [StageLag(stage, by_group[f"{prefix}-{stage}"], by_group[f"{prefix}-{stage}-batch"])
            for stage in stage_topics(settings)]


async def groups_lag(bootstrap: str, topic_of: dict[str, str]) -> list[GroupLag]:
    """Lag of each group on its one topic (group → topic), in the order given."""
    members = await describe_groups(bootstrap, list(topic_of))
    partitions = await topic_partitions(bootstrap, set(topic_of.values()))
    every_tp = [tp for tps in partitions.values() for tp in tps]
    ends, starts = await log_ends(bootstrap, every_tp)
    committed = await asyncio.gather(*(committed_offsets(bootstrap, group, partitions[topic])
                                       for group, topic in topic_of.items()))
    result = []
    for (group, topic), offsets in zip(topic_of.items(), committed, strict=True):
        lag = sum(max(ends[tp] - position(offsets.get(tp), starts[tp]), 0)
                  for tp in partitions[topic])
        count, state = members.get(group, (0, "Unknown"))
        result.append(GroupLag(group, (topic,), count, state, len(partitions[topic]), lag))
    return result


def position(committed: int | None, log_start: int) -> int:
    return log_start if committed is None else max(committed, log_start)


async def describe_groups(bootstrap: str, groups: list[str]) -> dict[str, tuple[int, str]]:
    """group → (members, state). A group the broker does not know has no members."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:  # one group a request: Tansu's answer to several does not parse
        responses: list[Any] = [response for group in groups
                                for response in await admin.describe_consumer_groups([group])]
    finally:
        await admin.close()
    found: dict[str, tuple[int, str]] = {}
    for response in responses:
        for error_code, group, state, _type, _protocol, members, *_ in response.groups:
            found[group] = (len(members), state) if error_code == 0 else (0, "Unknown")
    return found


async def topic_partitions(bootstrap: str, topics: set[str]) -> dict[str, list[TopicPartition]]:
    """Each topic's partitions; none for a topic that does not exist yet."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        existing = await consumer.topics()
        return {topic: [TopicPartition(topic, p)
                        for p in sorted(consumer.partitions_for_topic(topic) or ())]
                if topic in existing else [] for topic in topics}
    finally:
        await consumer.stop()


async def log_ends(bootstrap: str, tps: list[TopicPartition], *, fetch_wait_s: float = 5.0
                   ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(log end, log start) of each partition; the end from a fetch's high watermark."""
    if not tps:
        return {}, {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        consumer.assign(tps)
        listed = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        for tp in tps:  # the last batch: its fetch answer carries the high watermark
            consumer.seek(tp, max(listed[tp] - 1, starts[tp]))
        deadline = time.monotonic() + fetch_wait_s
        while time.monotonic() < deadline and any(consumer.highwater(tp) is None for tp in tps):
            await consumer.getmany(timeout_ms=200)
        ends = {tp: max(listed[tp], consumer.highwater(tp) or 0) for tp in tps}
        return ends, starts
    finally:
        await consumer.stop()


async def committed_offsets(bootstrap: str, group: str, tps: list[TopicPartition]
                            ) -> dict[TopicPartition, int | None]:
    """The group's committed offset per partition (None: nothing committed)."""
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return {tp: await consumer.committed(tp) for tp in tps}
    finally:
        with contextlib.suppress(Exception):  # never joined: nothing to leave
            await consumer.stop()
