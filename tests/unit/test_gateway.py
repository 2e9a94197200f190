"""The gateway's HTTP contract with a fake router and key checker: authentication,
validation, the one error mapping, OpenAI response shapes and SSE streaming."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
from fastapi.testclient import TestClient

from pipeline.config import GatewaySettings, Settings
from pipeline.router import (
    ChatRequest,
    Completion,
    ContextTooLong,
    NoHealthyReplica,
    QuotaExceeded,
    RouterError,
    Saturated,
    UpstreamError,
)
from pipeline.web.errors import retry_after
from pipeline.web.gateway import create_gateway_app
from pipeline.web.resources import GatewayResources

KEY = "sak_0123456789ab_" + "x" * 43
HEADERS = {"Authorization": f"Bearer {KEY}"}


def completion(text: str = "hello there") -> Completion:
    return Completion(request_id="r1", text=text, input_tokens=12, output_tokens=3,
                      estimated_input_tokens=12, ttft_ms=5, latency_ms=9, pool="default",
                      replica="http://a/v1", finish_reason="stop")


@dataclass
class FakeRouter:
    model_name: str = "m"
    error: RouterError | None = None
    pieces: list[str] = field(default_factory=lambda: ["hel", "lo"])
    seen: list[ChatRequest] = field(default_factory=list)
    fail_after_text: bool = False

    async def complete(self, request: ChatRequest) -> Completion:
        self.seen.append(request)
        if self.error:
            raise self.error
        return completion()

    async def stream(self, request: ChatRequest) -> AsyncIterator[str | Completion]:
        self.seen.append(request)
        if self.error:
            raise self.error
        for piece in self.pieces:
            yield piece
        yield completion("".join(self.pieces))

    async def relay(self, request: ChatRequest) -> AsyncIterator[bytes | Completion]:
        """As a replica streams: its own chunks, passed on as they are (Router.relay)."""
        self.seen.append(request)
        if self.error:
            raise self.error
        for piece in self.pieces:
            yield replica_chunk({"content": piece})
        if self.fail_after_text:
            raise UpstreamError("http://10.0.0.7:8000/v1: stream interrupted")
        yield replica_chunk({}, finish="stop") + replica_chunk(None) + b"data: [DONE]\n\n"
        yield completion("")

    async def readiness(self) -> tuple[bool, str]:
        return self.error is None, "fake"


def replica_chunk(delta: dict[str, str] | None, finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-replica", "object": "chat.completion.chunk", "model": "m",
            "choices": [] if delta is None else [{"index": 0, "delta": delta,
                                                  "finish_reason": finish}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}}
    return f"data: {json.dumps(body)}\n\n".encode()


class FakeAuth:
    async def tenant_for(self, key: str) -> str | None:
        return "acme" if key == KEY else None


@pytest.fixture
def router() -> FakeRouter:
    return FakeRouter()


@pytest.fixture
def client(router: FakeRouter) -> Iterator[TestClient]:
    @asynccontextmanager
    async def resources(_: Settings) -> AsyncIterator[GatewayResources]:
        yield GatewayResources(router=router, auth=FakeAuth())

    settings = Settings(gateway=GatewaySettings(max_tokens_limit=512, max_messages=4))
    with TestClient(create_gateway_app(settings, resources)) as test_client:
        yield test_client


def body(**overrides: object) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8,
            **overrides}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"},
                                     {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}])
def test_missing_or_bad_key_is_401_with_one_generic_message(client: TestClient,
                                                            headers: dict[str, str]) -> None:
    response = client.post("/v1/chat/completions", json=body(), headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["message"] == "invalid or missing API key"


def test_key_acting_for_another_tenant_is_403(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json=body(),
                           headers={**HEADERS, "X-Secanalyst-Tenant": "other"})
    assert response.status_code == 403
    assert "other" not in response.text and "acme" not in response.text


def test_completion_in_openai_shape_for_the_key_tenant(client: TestClient,
                                                       router: FakeRouter) -> None:
    response = client.post("/v1/chat/completions",
                           json=body(temperature=0.3, top_p=0.9, stop=["\n"]), headers=HEADERS)
    assert response.status_code == 200
    data = response.json()
    assert data["object"] == "chat.completion" and data["model"] == "m"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "hello there"}
    assert data["usage"] == {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}
    sent = router.seen[0]
    assert (sent.tenant_id, sent.max_tokens, sent.temperature) == ("acme", 8, 0.3)
    assert sent.messages == [{"role": "user", "content": "hi"}]
    assert sent.extra_body == {"top_p": 0.9, "stop": ["\n"]}


@pytest.mark.parametrize(("error", "status", "retry"), [
    (QuotaExceeded("acme", 2.2), 429, "3"),
    (Saturated(0.05), 503, "1"),
    (NoHealthyReplica("no healthy replica left in pool 'default'"), 503, "1"),
    (ContextTooLong(5000, 4096), 413, None),
    (UpstreamError("http://10.0.0.7:8000/v1 said 400: secret detail", upstream_status=400),
     502, None),
])
@pytest.mark.parametrize("stream", [False, True])
def test_router_errors_map_to_statuses(client: TestClient, router: FakeRouter,
                                       error: RouterError, status: int, retry: str | None,
                                       stream: bool) -> None:
    router.error = error
    response = client.post("/v1/chat/completions", json=body(stream=stream), headers=HEADERS)
    assert response.status_code == status
    assert response.headers.get("Retry-After") == retry
    assert "10.0.0.7" not in response.text and "secret" not in response.text
    assert "pool 'default'" not in response.text
    if isinstance(error, ContextTooLong):
        assert "5000" in response.text and "4096" in response.text


def test_retry_after_is_whole_seconds_rounded_up() -> None:
    assert [retry_after(s) for s in (0.0, 0.01, 1.0, 1.2, 59.9)] == ["1", "1", "1", "2", "60"]


@pytest.mark.parametrize(("payload", "param"), [
    (body(max_tokens=513), "max_tokens"),
    (body(max_tokens=0), "max_tokens"),
    (body(messages=[]), "messages"),
    (body(messages=[{"role": "user", "content": "x"}] * 5), "messages"),
    (body(messages=[{"role": "wizard", "content": "x"}]), "messages.0.role"),
    (body(temperature=3), "temperature"),
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
])
def test_validation_errors_name_the_field(client: TestClient, router: FakeRouter,
                                          payload: dict[str, object], param: str) -> None:
    response = client.post("/v1/chat/completions", json=payload, headers=HEADERS)
    assert response.status_code == 422
    assert response.json()["error"]["param"] == param
    assert not router.seen


def test_malformed_json_is_400_and_unknown_model_404(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", content=b"{not json",
                           headers={**HEADERS, "Content-Type": "application/json"})
    assert response.status_code == 400
    response = client.post("/v1/chat/completions", json=body(model="gpt-9"), headers=HEADERS)
    assert response.status_code == 404 and response.json()["error"]["param"] == "model"


def test_oversized_body_is_413_before_parsing(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", headers=HEADERS,
                           json=body(messages=[{"role": "user", "content": "a" * 1_100_000}]))
    assert response.status_code == 413


def sse_events(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.splitlines()
            if line.startswith("data: ")]


def test_streaming_relays_the_replica_events_as_sse(client: TestClient) -> None:
    with client.stream("POST", "/v1/chat/completions", headers=HEADERS,
                       json=body(stream=True, stream_options={"include_usage": True})
                       ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "hello"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"]["completion_tokens"] == 3


def test_a_failure_after_text_ends_the_stream_with_an_error_event(
        client: TestClient, router: FakeRouter) -> None:
    router.fail_after_text = True
    with client.stream("POST", "/v1/chat/completions", headers=HEADERS,
                       json=body(stream=True)) as response:
        assert response.status_code == 200
        text = response.read().decode()
    events = sse_events(text)
    assert json.loads(events[-1])["error"]["type"] == "upstream_error"
    assert "10.0.0.7" not in text


def test_models_needs_a_key_and_lists_the_served_model(client: TestClient) -> None:
    assert client.get("/v1/models").status_code == 401
    data = client.get("/v1/models", headers=HEADERS).json()
    assert [m["id"] for m in data["data"]] == ["m"]


def test_metrics_and_health(client: TestClient) -> None:
    client.post("/v1/chat/completions", json=body(), headers={})  # one unauthorized
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'secanalyst_llm_rejections_total{reason="authentication_error"}' in metrics.text
    assert client.get("/healthz").json()["status"] == "ok"
