"""Router: count → choose pool → choose replica → dispatch (retry elsewhere) → record."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import openai
import structlog

from pipeline.config import LLMPool
from pipeline.router.dispatch import ReplicaClient, Upstream
from pipeline.router.errors import NoHealthyReplica, RouterError, UpstreamError
from pipeline.router.replicas import Pool, Replica, choose_pool, choose_replica
from pipeline.router.tokens import Message, TokenCounter
from pipeline.router.usage import UsageSink
from schemas.usage import UsageEvent

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ChatRequest:
    tenant_id: str
    messages: list[Message]
    max_tokens: int
    temperature: float = 0.0
    priority: str = "standard"
    alert_id: str | None = None
    response_format: dict[str, Any] | None = None
    extra_body: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Completion:
    request_id: str
    text: str
    input_tokens: int
    output_tokens: int
    estimated_input_tokens: int
    ttft_ms: int | None
    latency_ms: int
    pool: str
    replica: str
    finish_reason: str | None


class Router:
    def __init__(self, *, model_name: str, pools: Mapping[str, LLMPool], counter: TokenCounter,
                 usage: UsageSink, connect_timeout_s: float = 5.0,
                 request_timeout_s: float = 120.0) -> None:
        self.model_name = model_name
        self._counter = counter
        self._usage = usage
        self._pools = [Pool(name, spec.max_context_tokens,
                            [Replica(url=url, pool=name) for url in spec.endpoints])
                       for name, spec in pools.items()]
        self._clients = {r.url: ReplicaClient(r.url, connect_timeout_s=connect_timeout_s,
                                              request_timeout_s=request_timeout_s)
                         for p in self._pools for r in p.replicas}

    def estimate(self, request: ChatRequest) -> tuple[int, int]:
        """(prompt tokens, prompt + max output tokens) before anything is sent."""
        prompt = self._counter.count_chat(request.messages)
        return prompt, prompt + request.max_tokens

    async def complete(self, request: ChatRequest) -> Completion:
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        prompt_tokens, needed = self.estimate(request)
        try:
            pool = choose_pool(self._pools, needed)
        except RouterError as exc:
            self._record_failure(request, request_id, prompt_tokens, started, exc, "-", "-")
            raise
        tried: set[str] = set()
        body = self._body(request)
        while True:
            try:
                replica = choose_replica(pool, exclude=tried)
            except NoHealthyReplica as exc:
                self._record_failure(request, request_id, prompt_tokens, started, exc,
                                     pool.name, "-")
                raise
            tried.add(replica.url)
            replica.in_flight_requests += 1
            replica.in_flight_tokens += needed
            try:
                upstream = await self._clients[replica.url].chat(body)
            except (openai.APIConnectionError, openai.InternalServerError) as exc:
                replica.circuit.failure(time.monotonic())
                log.warning("replica_failed", replica=replica.url, error=str(exc))
                continue
            except openai.APIStatusError as exc:
                error = UpstreamError(str(exc), upstream_status=exc.status_code)
                self._record_failure(request, request_id, prompt_tokens, started, error,
                                     pool.name, replica.url)
                raise error from exc
            finally:
                replica.in_flight_requests -= 1
                replica.in_flight_tokens -= needed
            replica.circuit.success()
            return self._finish(request, request_id, prompt_tokens, pool, replica, upstream)

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model_name, "messages": request.messages,
                                "max_tokens": request.max_tokens,
                                "temperature": request.temperature}
        if request.response_format is not None:
            body["response_format"] = request.response_format
        if request.extra_body:
            body["extra_body"] = request.extra_body
        return body

    def _finish(self, request: ChatRequest, request_id: str, estimated: int, pool: Pool,
                replica: Replica, upstream: Upstream) -> Completion:
        input_tokens = upstream.prompt_tokens if upstream.prompt_tokens is not None else estimated
        output_tokens = upstream.completion_tokens or 0
        if upstream.prompt_tokens is not None and upstream.prompt_tokens != estimated:
            log.warning("token_estimate_mismatch", estimated=estimated,
                        reported=upstream.prompt_tokens)
        self._usage.record(UsageEvent(
            tenant_id=request.tenant_id, model_name=self.model_name, pool=pool.name,
            replica=replica.url, priority=request.priority, request_id=request_id,
            alert_id=request.alert_id, input_tokens=input_tokens, output_tokens=output_tokens,
            ttft_ms=upstream.ttft_ms, total_latency_ms=upstream.latency_ms, status_code=200))
        return Completion(request_id=request_id, text=upstream.text, input_tokens=input_tokens,
                          output_tokens=output_tokens, estimated_input_tokens=estimated,
                          ttft_ms=upstream.ttft_ms, latency_ms=upstream.latency_ms,
                          pool=pool.name, replica=replica.url,
                          finish_reason=upstream.finish_reason)

    def _record_failure(self, request: ChatRequest, request_id: str, estimated: int,
                        started: float, error: RouterError, pool: str, replica: str) -> None:
        self._usage.record(UsageEvent(
            tenant_id=request.tenant_id, model_name=self.model_name, pool=pool,
            replica=replica, priority=request.priority, request_id=request_id,
            alert_id=request.alert_id, input_tokens=estimated, output_tokens=0,
            total_latency_ms=round((time.perf_counter() - started) * 1000),
            status_code=error.status_code, error_kind=error.kind))

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
