"""The gateway as deployed: `secanalyst gateway` (uvicorn) on a free port, its own
PostgreSQL, the vLLM simulator as backend, keys made with the CLI's functions, and the
real OpenAI client as caller."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import openai
import psycopg
import pytest

from pipeline.cli.usage import create_api_key, revoke_api_key
from pipeline.store.usage_partitions import month_start, partition_name
from tests.integration.gateway_stack import MODEL, GatewayStack, gateway_stack

pytestmark = pytest.mark.integration
TINY_QUOTA = 300  # tokens per minute of the tenant "tiny"


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayStack]:
    with gateway_stack("gateway", ["--output-tokens", "8", "--itl-ms", "2",
                                   "--prefill-ms-per-token", "0.05"],
                       max_context_tokens=512,
                       tenants={"tiny": {"tokens_per_minute": TINY_QUOTA}}) as stack:
        yield stack


def client(gateway: GatewayStack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def ask(text: str = "Is 4625 a failed logon?", max_tokens: int = 16) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens}


def test_missing_unknown_and_revoked_keys_get_the_same_401(gateway: GatewayStack) -> None:
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


def usage_rows(gateway: GatewayStack, tenant: str, count: int,
               timeout_s: float = 10) -> list[tuple[object, ...]]:
    deadline = time.monotonic() + timeout_s
    rows: list[tuple[object, ...]] = []
    with psycopg.connect(gateway.settings.database_url) as conn:
        while time.monotonic() < deadline:
            rows = conn.execute(
                """SELECT tableoid::regclass::text, status_code, input_tokens, output_tokens,
                          error_kind FROM llm_usage_events WHERE tenant_id = %s
                          AND error_kind IS DISTINCT FROM 'in_flight'  -- settled rows
                   ORDER BY created_at""", (tenant,)).fetchall()
            conn.commit()
            if len(rows) >= count:
                break
            time.sleep(0.2)
    return rows


def test_completion_lands_a_usage_row_in_this_months_partition(gateway: GatewayStack) -> None:
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


def test_streaming_passes_the_text_through(gateway: GatewayStack) -> None:
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


def test_too_long_prompt_is_413(gateway: GatewayStack) -> None:
    tenant = f"long-{uuid.uuid4().hex[:6]}"
    _, key = create_api_key(gateway.settings, tenant)
    answer = httpx.post(f"{gateway.url}/v1/chat/completions",
                        json=ask("alert " * 600, max_tokens=16),
                        headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert answer.status_code == 413
    assert "512" in answer.json()["error"]["message"]
    # Refused before any replica: a metric, not a usage row (router/router.py).
    assert usage_rows(gateway, tenant, 1, timeout_s=1) == []
    assert 'secanalyst_llm_rejections_total{reason="context_too_long"}' in httpx.get(
        f"{gateway.url}/metrics").text


def test_quota_exhausted_is_429_with_retry_after(gateway: GatewayStack) -> None:
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


def test_metrics_show_requests_and_rejections(gateway: GatewayStack) -> None:
    text = httpx.get(f"{gateway.url}/metrics").text
    assert 'secanalyst_llm_requests_total{' in text
    assert 'reason="quota_exceeded"' in text or 'reason="authentication_error"' in text
    assert "secanalyst_llm_ttft_seconds_bucket" in text
