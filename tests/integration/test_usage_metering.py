"""Every token metered, on real servers: `secanalyst gateway` (uvicorn) on a free port with
its own PostgreSQL and a private vLLM simulator (its own /metrics counters, so nobody
else's requests pollute them). A client that drops a stream mid-way is charged the prompt
and the streamed output (usage row and quota); a process killed mid-call leaves an
in-flight row that the next start settles as abandoned; refusals write no row; /readyz
fails without a reachable model server."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from pipeline.cli.usage import create_api_key
from pipeline.config import LLMPool, Settings
from pipeline.router import ChatRequest, Router
from pipeline.router.metrics import MeteredUsageSink
from pipeline.router.usage import UsageBatch
from pipeline.runtime import build_router, usage_writer_for
from pipeline.store.database import open_pool
from pipeline.store.usage import PostgresUsageStore
from pipeline.web.gateway import create_gateway_app
from pipeline.web.resources import GatewayResources
from schemas.usage import ABANDONED, CLIENT_DISCONNECT, IN_FLIGHT, UsageEvent
from tests.integration.gateway_stack import MODEL, GatewayStack, gateway_stack
from tests.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
ROOT = Path(__file__).parents[2]
CAPPED_QUOTA = 600  # tokens per minute of the tenant "capped"
SIM_ITL_MS = 20


@pytest.fixture(scope="module")
def stack() -> Iterator[GatewayStack]:
    # Streams long enough to be cut: up to 200 tokens, one every 20 ms.
    with gateway_stack("metering", ["--output-tokens", "200", "--itl-ms", str(SIM_ITL_MS),
                                    "--itl-ms-per-running", "0",
                                    "--prefill-ms-per-token", "0.05"],
                       max_context_tokens=2048,
                       tenants={"capped": {"tokens_per_minute": CAPPED_QUOTA}}) as started:
        yield started


def ask(text: str, max_tokens: int, *, stream: bool = True) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens, "stream": stream}


def stream_and_cut(stack: GatewayStack, key: str, body: dict[str, object],
                   cut_after: int) -> int:
    """Read `cut_after` text chunks of a streamed completion, then drop the connection
    (as a client that goes away); the chunks read."""
    seen = 0
    with httpx.Client(timeout=30) as http, http.stream(
            "POST", f"{stack.url}/v1/chat/completions", json=body,
            headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                seen += 1
                if seen >= cut_after:
                    break
    return seen


def stream_to_end(stack: GatewayStack, key: str, body: dict[str, object]) -> None:
    with httpx.Client(timeout=60) as http:
        answer = http.post(f"{stack.url}/v1/chat/completions", json=body,
                           headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 200 and answer.text.rstrip().endswith("[DONE]")


async def cancel_after(router: Router, request: ChatRequest, *, pieces: int) -> list[str]:
    """Cancel a call once `pieces` pieces of text have streamed (as a consumer stopped
    or timed out would); the pieces received. Fails if the call ends before."""
    received: list[str] = []
    task = asyncio.create_task(router.complete(request, on_delta=received.append))
    async with asyncio.timeout(120):
        while len(received) < pieces:
            assert not task.done(), "the call ended before the cut"
            await asyncio.sleep(0.005)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return received


def fetch_rows(settings: Settings, tenant: str) -> list[dict[str, Any]]:
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        cur = conn.execute(
            """SELECT status_code, error_kind, input_tokens, output_tokens, request_id
               FROM llm_usage_events WHERE tenant_id = %s ORDER BY created_at""",
            (tenant,))
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def usage_rows(settings: Settings, tenant: str, count: int,
               timeout_s: float = 15) -> list[dict[str, Any]]:
    """The tenant's rows once `count` of them are settled (none left in flight)."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = fetch_rows(settings, tenant)
        settled = all(r["error_kind"] != IN_FLIGHT for r in rows)
        if (len(rows) >= count and settled) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def sim_counters(sim_url: str) -> tuple[float, float]:
    """(vllm:prompt_tokens_total, vllm:generation_tokens_total) of the simulator."""
    text = httpx.get(sim_url.removesuffix("/v1") + "/metrics", timeout=5).text
    values = {"prompt": 0.0, "generation": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "vllm:prompt_tokens_total":
                values["prompt"] += sample.value
            elif sample.name == "vllm:generation_tokens_total":
                values["generation"] += sample.value
    return values["prompt"], values["generation"]


def test_a_stream_cut_by_the_client_is_metered_and_keeps_its_quota(
        stack: GatewayStack) -> None:
    _, key = create_api_key(stack.settings, "capped")
    prompt_before, generated_before = sim_counters(stack.sim)
    seen = stream_and_cut(stack, key, ask("Explain event 4625 in one line.", 150),
                          cut_after=100)
    [row] = usage_rows(stack.settings, "capped", 1)
    prompt_tokens, generated = (after - before for after, before in zip(
        sim_counters(stack.sim), (prompt_before, generated_before), strict=True))
    assert (row["status_code"], row["error_kind"]) == (499, CLIENT_DISCONNECT)
    assert row["input_tokens"] == prompt_tokens  # the replica's own count of the prompt
    # The streamed output, and at most the few tokens in transit when the client left.
    assert seen <= row["output_tokens"] <= generated
    assert generated < 150  # the replica stopped: the cut reached it
    # The quota keeps the charge: a request that would fit the window had the cut one
    # been refunded, but not with its tokens charged, is refused.
    # With max_tokens = quota - charged + 20 it needs more than the charged window has
    # left, and fits a refunded one as long as its prompt (~35 tokens) is under
    # charged - 20 (> 80).
    charged = row["input_tokens"] + row["output_tokens"]
    assert charged >= 100
    answer = httpx.post(f"{stack.url}/v1/chat/completions",
                        json=ask("hi", CAPPED_QUOTA - charged + 20, stream=False),
                        headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert answer.status_code == 429, answer.text


def test_refusals_write_no_usage_row(stack: GatewayStack) -> None:
    tenant = f"refused-{uuid.uuid4().hex[:6]}"
    _, key = create_api_key(stack.settings, tenant)
    for _ in range(3):  # a consumer retrying a request that cannot fit the context
        answer = httpx.post(f"{stack.url}/v1/chat/completions",
                            json=ask("alert " * 3000, 16, stream=False),
                            headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert answer.status_code == 413
    stream_to_end(stack, key, ask("hello", 4))  # a request that ran: one row
    rows = usage_rows(stack.settings, tenant, 1)
    assert [(r["status_code"], r["error_kind"]) for r in rows] == [(200, None)]
    metrics = httpx.get(f"{stack.url}/metrics").text
    assert 'secanalyst_llm_rejections_total{reason="context_too_long"} 3.0' in metrics


_KILLED_CALLER = """
import asyncio, sys
from pipeline.config import Settings
from pipeline.router import ChatRequest, Router
from pipeline.runtime import build_router, usage_writer_for
from pipeline.store.database import open_pool

async def main() -> None:
    settings = Settings()
    pool = await open_pool(settings)
    writer = usage_writer_for(settings, pool)
    writer.start()
    router = build_router(settings, writer)
    await router.complete(ChatRequest(tenant_id=sys.argv[1], max_tokens=200,
                                      messages=[{"role": "user", "content": "long one"}]))

asyncio.run(main())
"""


async def test_a_caller_killed_mid_call_leaves_a_row_the_next_start_settles(
        stack: GatewayStack) -> None:
    tenant = f"killed-{uuid.uuid4().hex[:6]}"
    caller = subprocess.Popen([sys.executable, "-c", _KILLED_CALLER, tenant], cwd=ROOT,
                              env={**stack.env, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 60
        while not await asyncio.to_thread(fetch_rows, stack.settings, tenant):
            assert time.monotonic() < deadline and caller.poll() is None
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # mid-stream (200 tokens take 4 s)
        caller.send_signal(signal.SIGKILL)
        caller.wait(10)
    finally:
        if caller.poll() is None:
            caller.kill()
    [row] = await asyncio.to_thread(fetch_rows, stack.settings, tenant)
    assert row["error_kind"] == IN_FLIGHT  # nothing settled it: the process died
    # The next start of a usage writer settles rows in flight older than the request
    # timeout (0 here: the test's stand-in for "long enough ago").
    settings = stack.settings.model_copy(update={"llm": stack.settings.llm.model_copy(
        update={"request_timeout_s": 0.0})})
    pool = await open_pool(settings)
    writer = usage_writer_for(settings, pool)
    writer.start()
    try:
        for _ in range(100):
            if writer.abandoned_settled:
                break
            await asyncio.sleep(0.05)
    finally:
        await writer.close()
        await pool.close()
    [row] = await asyncio.to_thread(usage_rows, stack.settings, tenant, 1)
    assert row["error_kind"] == ABANDONED and row["status_code"] is None
    # The prompt and the output streamed before the kill (progress writes), charged.
    assert row["input_tokens"] > 0 and row["output_tokens"] > 0


class _ListSink:
    def __init__(self) -> None:
        self.events: list[UsageEvent] = []

    def record(self, event: UsageEvent) -> None:
        self.events.append(event)


def routed_to(settings: Settings, endpoint: str) -> Settings:
    pools = {"default": LLMPool(endpoints=[endpoint], max_context_tokens=2048)}
    return settings.model_copy(update={"llm": settings.llm.model_copy(
        update={"pools": pools})})


def _gateway_on(settings: Settings, endpoint: str) -> TestClient:
    """The gateway app in-process with a real router whose one replica is `endpoint`."""
    routed = routed_to(settings, endpoint)

    @asynccontextmanager
    async def resources(_: Settings) -> AsyncIterator[GatewayResources]:
        router = build_router(routed, MeteredUsageSink(_ListSink()))
        try:
            yield GatewayResources(router=router, auth=_NoKeys())
        finally:
            await router.close()

    return TestClient(create_gateway_app(routed, resources))


class _NoKeys:
    async def tenant_for(self, key: str) -> str | None:
        return None


def test_readyz_fails_with_the_reason_when_no_model_server_answers(
        stack: GatewayStack) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with _gateway_on(stack.settings, closed) as client:
        assert client.get("/healthz").status_code == 200  # alive all the same
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["status"] == "not_ready"
        assert closed in answer.json()["reason"] and "connect" in answer.json()["reason"]
    with _gateway_on(stack.settings, stack.sim) as client:
        answer = client.get("/readyz")
        assert answer.status_code == 200 and stack.sim in answer.json()["reason"]


async def test_a_caller_that_cancels_is_charged_what_the_replica_processed(
        stack: GatewayStack) -> None:
    """The consumer's side of a disconnect: the coroutine cancelled mid-stream."""
    sink = _ListSink()
    router = build_router(routed_to(stack.settings, stack.sim), sink)
    try:
        pieces = await cancel_after(router, ChatRequest(
            tenant_id="cancelled", max_tokens=150,
            messages=[{"role": "user", "content": "tell me more"}]), pieces=10)
    finally:
        await router.close()
    [event] = sink.events
    assert (event.status_code, event.error_kind) == (499, CLIENT_DISCONNECT)
    assert event.input_tokens > 0 and len(pieces) <= event.output_tokens < 150


async def test_the_store_settles_rows_in_place_deletes_and_abandons(
        stack: GatewayStack) -> None:
    """The write path's SQL: one upsert per batch keyed by (id, created_at), the delete of
    a reservation whose request reached no replica, running counts of rows in flight, the
    settlement of stale ones (billed only if a token was seen)."""
    tenant = f"store-{uuid.uuid4().hex[:6]}"

    def reserved(minutes_ago: float) -> UsageEvent:
        return UsageEvent(tenant_id=tenant, model_name=MODEL, pool="default", replica="r",
                          request_id=uuid.uuid4().hex, input_tokens=30, output_tokens=0,
                          status_code=None, error_kind=IN_FLIGHT,
                          created_at=datetime.now(UTC) - timedelta(minutes=minutes_ago))

    done, unserved, stale, recent = (reserved(0), reserved(0), reserved(10), reserved(0))
    started = reserved(10)  # killed after its first tokens
    pool = await open_pool(stack.settings)
    try:
        store = PostgresUsageStore(pool)
        await store.write(UsageBatch(upserts=[done, unserved, stale, recent, started]))
        await store.write(UsageBatch(progress=[replace(
            started, input_tokens=29, output_tokens=7)]))
        await store.write(UsageBatch(progress=[replace(
            started, input_tokens=29, output_tokens=5)]))  # a crossed round: never lower
        await store.write(UsageBatch(
            upserts=[replace(done, status_code=200, error_kind=None,
                             input_tokens=31, output_tokens=9)],
            deletes=[unserved]))
        # A late progress write never touches a settled row.
        await store.write(UsageBatch(progress=[replace(
            done, input_tokens=99, output_tokens=99)]))
        assert await store.settle_abandoned(older_than_s=60) >= 1
        # A reservation never overwrites a settled row.
        await store.write(UsageBatch(upserts=[done]))
    finally:
        await pool.close()
    rows = {r["request_id"]: r for r in fetch_rows(stack.settings, tenant)}
    assert set(rows) == {done.request_id, stale.request_id, recent.request_id,
                         started.request_id}
    assert (rows[done.request_id]["status_code"], rows[done.request_id]["input_tokens"],
            rows[done.request_id]["output_tokens"]) == (200, 31, 9)
    assert rows[stale.request_id]["error_kind"] == ABANDONED
    assert rows[stale.request_id]["input_tokens"] == 0  # no token seen: vLLM counted none
    assert (rows[started.request_id]["error_kind"], rows[started.request_id]["input_tokens"],
            rows[started.request_id]["output_tokens"]) == (ABANDONED, 29, 7)
    assert rows[recent.request_id]["error_kind"] == IN_FLIGHT  # may still be running
