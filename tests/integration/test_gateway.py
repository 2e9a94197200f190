"""The gateway as deployed: `secanalyst gateway` (uvicorn) on a free port, its own
PostgreSQL, the vLLM simulator as backend, keys made with the CLI's functions, and the
real OpenAI client as caller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import psycopg
import pytest

from pipeline.cli_usage import create_api_key, maintain_partitions, revoke_api_key
from pipeline.config import DatabaseSettings, Settings
from pipeline.devstack.postgres import EmbeddedPostgres
from pipeline.store.migrate import migrate
from pipeline.store.usage_partitions import month_start, partition_name
from tests.servers import free_port, stop, wait_http

pytestmark = pytest.mark.integration
ROOT = Path(__file__).parents[2]
MODEL = "smollm2-135m-instruct"
TINY_QUOTA = 300  # tokens per minute of the tenant "tiny"


@dataclass(frozen=True)
class Gateway:
    url: str
    settings: Settings


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    state = tmp_path_factory.mktemp("gateway")
    postgres = EmbeddedPostgres(state_dir=state, port=free_port())
    postgres.start()
    sim_port, gw_port = free_port(), free_port()
    sim = subprocess.Popen([sys.executable, "-m", "bench.vllm_sim", "--port", str(sim_port),
                            "--model", MODEL, "--output-tokens", "8", "--itl-ms", "2",
                            "--prefill-ms-per-token", "0.05"], cwd=ROOT)
    gw: subprocess.Popen[bytes] | None = None
    try:
        settings = Settings(state_dir=state,
                            database=DatabaseSettings(url=postgres.address()))  # type: ignore[arg-type]
        migrate(settings.database_url)
        maintain_partitions(settings)
        env = {**os.environ,
               "SECANALYST_STATE_DIR": str(state),
               "SECANALYST_DATABASE__URL": postgres.address(),
               "SECANALYST_LLM__POOLS": json.dumps({"default": {
                   "endpoints": [f"http://127.0.0.1:{sim_port}/v1"],
                   "max_context_tokens": 512}}),
               "SECANALYST_GATEWAY__API_KEY_CACHE_S": "0",
               "SECANALYST_TENANTS__OVERRIDES": json.dumps(
                   {"tiny": {"tokens_per_minute": TINY_QUOTA}}),
               "SECANALYST_LOG_FORMAT": "json"}
        wait_http(f"http://127.0.0.1:{sim_port}/health", sim)
        gw = subprocess.Popen([str(ROOT / ".venv/bin/secanalyst"), "gateway", "--port",
                               str(gw_port)], cwd=state, env=env)
        wait_http(f"http://127.0.0.1:{gw_port}/healthz", gw)
        yield Gateway(f"http://127.0.0.1:{gw_port}", settings)
    finally:
        if gw is not None:
            stop(gw)
        stop(sim)
        postgres.stop()


def client(gateway: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def ask(text: str = "Is 4625 a failed logon?", max_tokens: int = 16) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens}


def test_missing_unknown_and_revoked_keys_get_the_same_401(gateway: Gateway) -> None:
    key_id, key = create_api_key(gateway.settings, "acme", "ci")
    url = f"{gateway.url}/v1/chat/completions"
    answers = [httpx.post(url, json=ask(), headers=h) for h in
               ({}, {"Authorization": "Bearer " + key[:-4] + "AAAA"},
                {"Authorization": "Bearer sak_000000000000_" + "x" * 43})]
    assert client(gateway, key).models.list().data[0].id == MODEL  # the key works
    assert revoke_api_key(gateway.settings, key_id)
    answers.append(httpx.post(url, json=ask(), headers={"Authorization": f"Bearer {key}"}))
    assert [a.status_code for a in answers] == [401] * 4
    assert len({a.text for a in answers}) == 1  # nothing tells them apart


def usage_rows(gateway: Gateway, tenant: str, count: int,
               timeout_s: float = 10) -> list[tuple[object, ...]]:
    deadline = time.monotonic() + timeout_s
    rows: list[tuple[object, ...]] = []
    with psycopg.connect(gateway.settings.database_url) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                """SELECT tableoid::regclass::text, status_code, input_tokens, output_tokens,
                          error_kind FROM llm_usage_events WHERE tenant_id = %s
                   ORDER BY created_at""", (tenant,)).fetchall()
            conn.commit()
            if len(rows) >= count:
                break
            time.sleep(0.2)
    return rows


def test_completion_lands_a_usage_row_in_this_months_partition(gateway: Gateway) -> None:
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    _, key = create_api_key(gateway.settings, tenant)
    reply = client(gateway, key).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hello gateway"}], max_tokens=8)
    assert reply.choices[0].message.content
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    [row] = usage_rows(gateway, tenant, 1)
    from datetime import UTC, datetime

    assert row[0] == partition_name(month_start(datetime.now(UTC)))
    assert row[1:4] == (200, reply.usage.prompt_tokens, reply.usage.completion_tokens)


def test_streaming_passes_the_text_through(gateway: Gateway) -> None:
    _, key = create_api_key(gateway.settings, "streamer")
    stream = client(gateway, key).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "stream please"}], max_tokens=8,
        stream=True, stream_options={"include_usage": True})
    pieces, usage = [], None
    for chunk in stream:
        pieces += [c.delta.content for c in chunk.choices if c.delta.content]
        usage = chunk.usage or usage
    assert len(pieces) >= 2 and "".join(pieces).strip()
    assert usage is not None and usage.completion_tokens == 8


def test_too_long_prompt_is_413(gateway: Gateway) -> None:
    tenant = f"long-{uuid.uuid4().hex[:6]}"
    _, key = create_api_key(gateway.settings, tenant)
    answer = httpx.post(f"{gateway.url}/v1/chat/completions",
                        json=ask("alert " * 600, max_tokens=16),
                        headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert answer.status_code == 413
    assert "512" in answer.json()["error"]["message"]
    [row] = usage_rows(gateway, tenant, 1)
    assert (row[1], row[4]) == (413, "context_too_long")


def test_quota_exhausted_is_429_with_retry_after(gateway: Gateway) -> None:
    _, key = create_api_key(gateway.settings, "tiny")
    headers = {"Authorization": f"Bearer {key}"}
    url = f"{gateway.url}/v1/chat/completions"
    # prompt + max_tokens fits the 300 tokens/minute once; after it is settled with
    # the real usage, what is left no longer covers a second reservation.
    first = httpx.post(url, json=ask(max_tokens=250), headers=headers, timeout=30)
    assert first.status_code == 200
    second = httpx.post(url, json=ask(max_tokens=250), headers=headers, timeout=30)
    assert second.status_code == 429
    retry = second.headers["Retry-After"]
    assert retry.isdigit() and 1 <= int(retry) <= 120  # whole seconds, within the window
    assert second.json()["error"]["type"] == "rate_limit_error"


def test_metrics_show_requests_and_rejections(gateway: Gateway) -> None:
    text = httpx.get(f"{gateway.url}/metrics").text
    assert 'secanalyst_llm_requests_total{' in text
    assert 'reason="quota_exceeded"' in text or 'reason="authentication_error"' in text
    assert "secanalyst_llm_ttft_seconds_bucket" in text
