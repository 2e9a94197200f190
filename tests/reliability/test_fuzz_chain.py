"""Fuzzed alerts through the whole stage chain on the real broker and database: every
alert ends with a verdict row in PostgreSQL or a dead letter on alerts.dlq (with the
stage, a reason and its original bytes), none stalls, every consumer group's lag is back
to 0 on every partition, and the worker keeps running.

The alerts are hypothesis draws (tests/reliability/fuzz_alerts.py; `chain_alerts`),
generated with a fixed seed (`@seed(SEED)`, generate phase only, no example database), so
every run sends the same alerts.
Each travels under a tenant of its own (the tenant header): fuzzed alerts share alert ids,
a tenant does not, so its verdict row or dead letter is found again by tenant. Alerts over
`ingest.max_alert_bytes` take the screened producer path (dead-lettered by `ingest`, as
every producer does); the rest go to alerts.raw as they are, invalid UTF-8 included.

All four stages run in this process (`run_worker(config, STAGES, stop)`) on topics and
consumer groups of this test's own, with the LLM on a private vLLM simulator
(bench/vllm_sim, latencies scaled down) so 1,000 alerts take minutes, not hours on CPU.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from hypothesis import Phase, given, seed
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipeline.analysis.runbook_loader import load_runbooks
from pipeline.config import Settings
from pipeline.kafka.admin import ensure_topics
from pipeline.kafka.producer import alert_producer, settings_sink
from pipeline.runtime import STAGES
from pipeline.sources.ingest_file import send_lines
from pipeline.worker import run_worker
from tests.integration.conftest import ROOT, session_settings
from tests.integration.simulated_llm import llm_on_simulator
from tests.integration.test_explain_outage import SimProcess
from tests.integration.test_router_simulator import free_port
from tests.reliability.conftest import full_size
from tests.reliability.fuzz_alerts import alert_bytes, mutated_alert
from tests.reliability.report import report_row
from tests.reliability.test_fuzz_alerts import FUZZ, _kind
from tests.reliability.test_poison_pill import committed

pytestmark = [pytest.mark.integration, pytest.mark.timeout(3600)]

SEED = 20261201
N = full_size(100, 1_000)
# No new outcome for this long: the rest are stalled (the finding this test looks for).
STALL_S = 240.0
LAG_TIMEOUT_S = 120.0


def chain_alerts() -> st.SearchStrategy[bytes]:
    """Half every kind of hostile alert, half mutated samples as plain JSON (hostile text
    escaped, as most producers send it): most of the first half stops at normalize (100,000
    of those go through normalize alone in test_fuzz_alerts.py), so the second half is what
    carries hostile content on through embed, retrieve and explain."""
    return st.one_of(alert_bytes(), mutated_alert().map(lambda a: json.dumps(a).encode()))


def draw_alerts(n: int) -> list[bytes]:
    """n hostile alerts, the same ones on every run (fixed seed, generate phase only)."""
    found: list[bytes] = []

    @seed(SEED)
    @hypothesis_settings(FUZZ, max_examples=n, phases=[Phase.generate])
    @given(chain_alerts())
    def collect(data: bytes) -> None:
        found.append(data)

    collect()
    return found[:n]


@pytest_asyncio.fixture
async def chain_settings(settings: Settings, run_id: str) -> AsyncIterator[Settings]:
    """Topics and groups of this test's own; the LLM a private simulator, 20x faster than
    its defaults (its prefill is serial per replica: 1,000 prompts would take ~15 min)."""
    sim = SimProcess(free_port())
    await sim.start()
    try:
        async with httpx.AsyncClient() as client:
            (await client.post(f"http://127.0.0.1:{sim.port}/admin/faults",
                               json={"slow_factor": 0.05})).raise_for_status()
        yield llm_on_simulator(session_settings(f"{run_id}fc"), sim.port)
    finally:
        sim.kill()


def original_bytes(letter: dict[str, Any]) -> bytes:
    original = str(letter["original"])
    return (base64.b64decode(original) if letter.get("original_encoding") == "base64"
            else original.encode("utf-8", "surrogateescape"))


def keeps_original(letter: dict[str, Any], data: bytes) -> bool:
    """The letter holds `data` (or, when truncated, its first bytes and its digest)."""
    kept = original_bytes(letter)
    if letter.get("original_truncated"):
        return (data.startswith(kept) and letter.get("original_size") == len(data)
                and letter.get("original_sha256") == hashlib.sha256(data).hexdigest())
    return kept == data


@dataclass
class DeadLetters:
    """alerts.dlq read from its start in the background, by tenant."""

    config: Settings
    by_tenant: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    unattributed: list[dict[str, Any]] = field(default_factory=list)

    async def follow(self) -> None:
        consumer = AIOKafkaConsumer(self.config.kafka.topics.dlq, group_id=None,
                                    bootstrap_servers=self.config.kafka_bootstrap,
                                    auto_offset_reset="earliest", fetch_max_bytes=16 << 20,
                                    max_partition_fetch_bytes=8 << 20)
        await consumer.start()
        try:
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        letter = json.loads(record.value)
                        tenant = letter.get("tenant_id")
                        if isinstance(tenant, str):
                            self.by_tenant.setdefault(tenant, []).append(letter)
                        else:
                            self.unattributed.append(letter)
        finally:
            await consumer.stop()


async def tenants_with_rows(db: AsyncConnectionPool, table: Literal["alerts", "verdicts"],
                            tenants: list[str]) -> set[str]:
    """Which of `tenants` have a row in `table` (alerts: normalize stored it)."""
    async with db.connection() as conn:
        rows = await (await conn.execute(
            sql.SQL("SELECT DISTINCT tenant_id FROM {} WHERE tenant_id = ANY(%s)").format(
                sql.Identifier(table)), (tenants,))).fetchall()
    return {row[0] for row in rows}


def stage_inputs(config: Settings) -> dict[str, list[str]]:
    """Each consumer group of the chain → the topics it reads (live and batch lanes)."""
    t, prefix = config.kafka.topics, config.kafka.group_prefix
    live = {"normalize": t.raw, "embed": t.normalized, "retrieve": t.embedded,
            "explain": t.enriched}
    batch = {"normalize": t.backfill, "embed": t.normalized_batch,
             "retrieve": t.embedded_batch, "explain": t.enriched_batch}
    return {**{f"{prefix}-{s}": [live[s]] for s in STAGES},
            **{f"{prefix}-{s}-batch": [batch[s]] for s in STAGES}}


async def log_ends(consumer: AIOKafkaConsumer, starts: dict[TopicPartition, int],
                   ) -> dict[TopicPartition, int]:
    """Each partition's log end, read by fetching from `starts`: the fetch's high watermark
    (or the last offset read + 1). Not `end_offsets`: Tansu's ListOffsets answers the last
    batch's base offset + 1 (pipeline/kafka/log_end_guard.py), one short of a multi-record batch."""
    consumer.assign(list(starts))
    for tp, offset in starts.items():
        consumer.seek(tp, offset)
    ends = dict.fromkeys(starts, 0)
    for _ in range(60):
        fetched = await consumer.getmany(timeout_ms=500)
        for tp, records in fetched.items():
            ends[tp] = max(ends[tp], records[-1].offset + 1)
        marks = {tp: consumer.highwater(tp) for tp in starts}
        if not fetched and all(mark is not None for mark in marks.values()):
            return {tp: max(ends[tp], marks[tp] or 0) for tp in starts}
    raise AssertionError(f"no fetch answered for {sorted(starts)}")


async def lags(config: Settings) -> dict[str, int]:
    """Log end − committed offset of every partition of every stage topic, by group."""
    admin = AIOKafkaAdminClient(bootstrap_servers=config.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=config.kafka_bootstrap, group_id=None,
                                fetch_max_bytes=16 << 20, max_partition_fetch_bytes=8 << 20)
    await admin.start()
    await consumer.start()
    try:
        found: dict[str, int] = {}
        for group, topics in stage_inputs(config).items():
            tps = [TopicPartition(topic, p) for topic in topics
                   for p in range(config.kafka.topics.partitions)]
            done = {tp: await committed(admin, group, tp) for tp in tps}
            for tp, end in (await log_ends(consumer, done)).items():
                found[f"{group} {tp.topic}[{tp.partition}]"] = end - done[tp]
        return found
    finally:
        await consumer.stop()
        await admin.close()


async def wait_for_lag_zero(config: Settings) -> dict[str, int]:
    deadline = time.monotonic() + LAG_TIMEOUT_S
    lagging = {k: v for k, v in (await lags(config)).items() if v}
    while lagging and time.monotonic() < deadline:
        await asyncio.sleep(2)
        lagging = {k: v for k, v in (await lags(config)).items() if v}
    return lagging


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    started, elapsed = time.monotonic(), [0.0]
    try:
        yield elapsed
    finally:
        elapsed[0] = time.monotonic() - started


async def test_fuzzed_alerts_through_the_whole_chain_are_verdicted_or_dead_lettered(
        chain_settings: Settings, db: AsyncConnectionPool, run_id: str) -> None:
    config = chain_settings
    alerts = draw_alerts(N)
    assert len(alerts) == N
    prefix = f"fc-{run_id}-"
    tenants = [f"{prefix}{i}" for i in range(N)]
    by_tenant = dict(zip(tenants, alerts, strict=True))
    await ensure_topics(config)
    await load_runbooks(config, ROOT / "runbooks")  # retrieve has passages to find
    letters = DeadLetters(config)
    following = asyncio.create_task(letters.follow())
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(config, STAGES, stop))
    producer = alert_producer(config.kafka_bootstrap, enable_idempotence=False, linger_ms=5)
    await producer.start()
    stalled: list[str] = []
    try:
        with timed() as elapsed:
            sink = settings_sink(config, producer, config.kafka.topics.raw, priority="live")
            for number, (tenant, data) in enumerate(by_tenant.items(), start=1):
                if len(data) > sink.max_alert_bytes:  # the producer refuses: screened path
                    await send_lines(sink, [(number, data)], tenant_id=tenant)
                else:
                    await sink.publish(tenant, [data])
            # Until every alert has an outcome, or nothing new has come for STALL_S.
            done: set[str] = set()
            last_progress = time.monotonic()
            while len(done) < N and time.monotonic() - last_progress < STALL_S:
                assert not worker.done(), f"the worker died: {worker.exception()!r}"
                now_done = (await tenants_with_rows(db, "verdicts", tenants)
                            | (letters.by_tenant.keys() & by_tenant))
                if len(now_done) > len(done):
                    last_progress = time.monotonic()
                done = now_done
                await asyncio.sleep(2)
            stalled = [t for t in tenants if t not in done]
            lagging = await wait_for_lag_zero(config) if not stalled else await lags(config)
            lagging = {k: v for k, v in lagging.items() if v}
        assert not worker.done(), f"the worker died: {worker.exception()!r}"
        await asyncio.sleep(1)  # the last letters of the DLQ reader
    finally:
        await producer.stop()
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 60)
        following.cancel()
        with contextlib.suppress(BaseException):
            await following

    with_verdict = await tenants_with_rows(db, "verdicts", tenants)
    tally: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    problems: list[str] = []
    for tenant, data in by_tenant.items():
        found = letters.by_tenant.get(tenant, [])
        if tenant in with_verdict:
            tally["verdicted"] += 1
        if found:
            tally["dead-lettered"] += 1
            tally[f"dead-lettered by {found[0].get('stage')}"] += 1
        if tenant in with_verdict and found:
            problems.append(f"{tenant}: a verdict and a dead letter ({found[0]['reason']})")
        if len(found) > 1:
            problems.append(f"{tenant}: {len(found)} dead letters")
        for letter in found[:1]:
            reasons[f"{letter.get('stage')}: {_kind(str(letter.get('reason') or ''))}"] += 1
            if not letter.get("reason") or not letter.get("stage"):
                problems.append(f"{tenant}: a dead letter without a reason or stage")
            elif letter["stage"] in ("ingest", "normalize"):  # the alert's own bytes
                if not keeps_original(letter, data):
                    problems.append(f"{tenant}: the letter lost the original bytes")
            elif not original_bytes(letter) or not letter.get("topic"):
                problems.append(f"{tenant}: a {letter['stage']} letter without its message")
    past_normalize = await tenants_with_rows(db, "alerts", stalled) if stalled else set()
    outcome: dict[str, object] = {
        "alerts": N, "verdicted": tally["verdicted"], "dead-lettered": tally["dead-lettered"],
        **{k: v for k, v in sorted(tally.items()) if k.startswith("dead-lettered by")},
        "stalled": len(stalled), "partitions with lag": len(lagging),
        "worker died": "no", "seconds": round(elapsed[0]),
        **{f"reason {k}": v for k, v in reasons.most_common(8)}}
    print(f"whole chain: {outcome}")
    report_row("fuzz through the whole chain", outcome)

    detail = "\n".join(
        f"{t} ({'stored by normalize' if t in past_normalize else 'no alerts row'}): "
        f"{by_tenant[t][:200]!r}" for t in stalled[:10])
    assert not stalled, f"{len(stalled)} of {N} alerts: no verdict, no dead letter:\n{detail}"
    assert not problems, "\n".join(problems[:20])
    assert not letters.unattributed, letters.unattributed[:3]
    assert not lagging, f"consumer lag left: {lagging}"
    assert tally["verdicted"] > 0 and tally["dead-lettered"] > 0, dict(tally)
