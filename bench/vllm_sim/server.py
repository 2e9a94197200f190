"""One simulated vLLM replica over HTTP (aiohttp): the OpenAI chat completions API
(streaming SSE with `stream_options.include_usage`, and not), /v1/models, /health,
/metrics with vLLM's metric names, and POST /admin/faults to inject faults at run time."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bench.vllm_sim.engine import (
    Engine,
    PriorityNotEnabled,
    SimConfig,
    burn_cpu,
    count_tokens,
)

TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)
ENGINE_KEY: web.AppKey[Engine] = web.AppKey("engine", Engine)
REGISTRY_KEY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)
MODEL_KEY: web.AppKey[str] = web.AppKey("model", str)
# As vLLM: a request naming another model than the one served gets 404 (opt-in here).
STRICT_MODEL_KEY: web.AppKey[bool] = web.AppKey("strict_model", bool)
# request id → [arrived, first token written, last byte written] (perf_counter: the
# system-wide monotonic clock on Linux, comparable with a client process's)
TIMINGS_KEY: web.AppKey[dict[str, list[float]]] = web.AppKey("timings", dict)
# How a benchmark client names a request so that the simulator's times of it can be
# matched with its own: a header, or (through a router that forwards no headers) a
# marker in the last message.
REQUEST_ID_HEADER = "X-Bench-Request-Id"
_ID_MARKER = re.compile(r"\[rid:([0-9A-Za-z_-]{1,40})\]")


class _EngineCollector(Collector):
    """Gauges and counters read from the engine at scrape time."""

    def __init__(self, engine: Engine, labels: dict[str, str]) -> None:
        self._engine = engine
        self._labels = labels

    def collect(self) -> Iterator[Metric]:
        e, c = self._engine, self._engine.counters
        names, values = list(self._labels), list(self._labels.values())
        for name, doc, value in (
                ("vllm:num_requests_waiting", "Requests waiting", e.num_waiting),
                ("vllm:num_requests_running", "Requests running", e.running),
                ("vllm:kv_cache_usage_perc", "KV-cache usage (1 = 100%)", e.kv_cache_usage)):
            gauge = GaugeMetricFamily(name, doc, labels=names)
            gauge.add_metric(values, value)
            yield gauge
        for name, doc, total in (
                ("vllm:prefix_cache_hits", "Prefix cache hits, in tokens", c.prefix_cache_hits),
                ("vllm:prefix_cache_queries", "Prefix cache queries, in tokens",
                 c.prefix_cache_queries),
                ("vllm:prompt_tokens", "Prefill tokens processed", c.prompt_tokens),
                ("vllm:generation_tokens", "Generation tokens processed", c.generation_tokens),
                ("vllm:request_success", "Requests finished", c.requests)):
            counter = CounterMetricFamily(name, doc, labels=names)
            counter.add_metric(values, total)
            yield counter


def _metrics(engine: Engine, model: str, ttft: list[Histogram]) -> CollectorRegistry:
    registry = CollectorRegistry()
    labels = {"model_name": model, "engine": "0"}
    registry.register(_EngineCollector(engine, labels))
    histogram = Histogram("vllm:time_to_first_token_seconds", "Time to first token",
                          list(labels), buckets=TTFT_BUCKETS, registry=registry)
    ttft.append(histogram.labels(**labels))
    return registry


def build_app(config: SimConfig, *, model: str = "sim-model",
              strict_model: bool = False) -> web.Application:
    app = web.Application()
    ttft: list[Histogram] = []
    engine = Engine(config, on_ttft=lambda seconds: ttft[0].observe(seconds))
    registry = _metrics(engine, model, ttft)
    app[ENGINE_KEY] = engine
    app[REGISTRY_KEY] = registry
    app[MODEL_KEY] = model
    app[STRICT_MODEL_KEY] = strict_model
    app[TIMINGS_KEY] = {}
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/admin/faults", get_faults)
    app.router.add_post("/admin/faults", set_faults)
    app.router.add_get("/admin/timings", get_timings)
    return app


async def health(request: web.Request) -> web.Response:
    return web.Response(text="")


async def models(request: web.Request) -> web.Response:
    model = request.app[MODEL_KEY]
    return web.json_response({"object": "list", "data": [
        {"id": model, "object": "model", "created": 0, "owned_by": "vllm-sim",
         "max_model_len": 32768}]})


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def get_faults(request: web.Request) -> web.Response:
    cfg = request.app[ENGINE_KEY].config
    return web.json_response({k: v for k, v in asdict(cfg).items()
                              if k in ("fail_rate", "drop_rate", "slow_factor")})


async def set_faults(request: web.Request) -> web.Response:
    cfg = request.app[ENGINE_KEY].config
    for key, value in (await request.json()).items():
        if key not in ("fail_rate", "drop_rate", "slow_factor"):
            raise web.HTTPBadRequest(text=f"unknown fault {key!r}")
        setattr(cfg, key, float(value))
    return await get_faults(request)


async def get_timings(request: web.Request) -> web.Response:
    """The kept timings (record_timings = 1), emptied as they are read."""
    timings = request.app[TIMINGS_KEY]
    answer = web.json_response(timings)
    timings.clear()
    return answer


def _request_id(request: web.Request, body: dict[str, Any]) -> str | None:
    rid = request.headers.get(REQUEST_ID_HEADER)
    if rid is None:
        messages = body.get("messages") or [{}]
        found = _ID_MARKER.search(str(messages[-1].get("content") or ""))
        rid = found.group(1) if found else None
    return rid


async def chat(request: web.Request) -> web.StreamResponse:
    arrived = time.perf_counter()  # the request's head is parsed: its bytes are here
    engine = request.app[ENGINE_KEY]
    body = await request.json()
    timing: list[float] | None = None
    if engine.config.record_timings:
        rid = _request_id(request, body)
        if rid is not None:
            timing = request.app[TIMINGS_KEY].setdefault(rid, [arrived, 0.0, 0.0])
    fault = engine.roll_fault()
    if fault == "drop":
        assert request.transport is not None
        request.transport.abort()  # connection reset, no reply
        raise web.HTTPInternalServerError  # never reaches the client
    if fault == "fail":
        return web.json_response({"error": {"message": "injected failure", "type": "sim",
                                            "code": 500}}, status=500)
    words = count_tokens(body.get("messages", []))
    burn_cpu(words, engine.config.cpu_us_per_token)
    max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 16)
    priority = int(body.get("priority") or 0)
    try:
        engine.check_priority(priority)
    except PriorityNotEnabled as exc:  # as vLLM answers it
        return web.json_response({"error": {"message": str(exc), "type": "BadRequestError",
                                            "code": 400}}, status=400)
    model = body.get("model", request.app[MODEL_KEY])
    if request.app[STRICT_MODEL_KEY] and model != request.app[MODEL_KEY]:
        return web.json_response({"error": {
            "message": f"The model `{model}` does not exist.", "type": "NotFoundError",
            "code": 404}}, status=404)
    rid = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    if body.get("stream"):
        options = body.get("stream_options") or {}
        return await _stream(request, engine, words, max_tokens, priority, model, rid,
                             created, bool(options.get("include_usage")),
                             bool(options.get("continuous_usage_stats")), timing)
    tokens = [t async for t in engine.generate(words, max_tokens, priority)]
    if timing is not None:
        timing[1] = timing[2] = time.perf_counter()
    finish = "length" if len(tokens) >= max_tokens else "stop"
    return web.json_response({
        "id": rid, "object": "chat.completion", "created": created, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": " ".join(tokens)},
                     "finish_reason": finish}],
        "usage": _usage(len(words), len(tokens))})


async def _stream(request: web.Request, engine: Engine, words: list[str], max_tokens: int,
                  priority: int, model: str, rid: str, created: int,
                  include_usage: bool, continuous_usage: bool = False,
                  timing: list[float] | None = None) -> web.StreamResponse:
    """As vLLM: with `continuous_usage_stats` every chunk carries the running usage.
    `timing` gets the times of the first token's write and of the last byte's."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
    await response.prepare(request)

    def chunk(delta: dict[str, Any], finish: str | None = None,
              usage: dict[str, int] | None = None) -> bytes:
        payload: dict[str, Any] = {
            "id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [] if usage else [{"index": 0, "delta": delta,
                                           "finish_reason": finish}]}
        if usage:
            payload["usage"] = usage
        elif continuous_usage:
            payload["usage"] = _usage(len(words), generated)
        return f"data: {json.dumps(payload)}\n\n".encode()

    generated = 0
    try:
        async for token in engine.generate(words, max_tokens, priority):
            delta = {"role": "assistant", "content": token} if generated == 0 else {
                "content": f" {token}"}
            generated += 1
            if timing is not None and generated == 1:
                timing[1] = time.perf_counter()
            await response.write(chunk(delta))
        finish = "length" if generated >= max_tokens else "stop"
        await response.write(chunk({}, finish))
        if include_usage:
            await response.write(chunk({}, usage=_usage(len(words), generated)))
        await response.write(b"data: [DONE]\n\n")
        if timing is not None:
            timing[2] = time.perf_counter()
        await response.write_eof()
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    return response


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


class SimCluster:
    """Several replicas in one process (one event loop), each on its own port."""

    def __init__(self, configs: list[SimConfig], *, host: str = "127.0.0.1",
                 ports: list[int] | None = None, model: str = "sim-model",
                 strict_model: bool = False) -> None:
        self.apps = [build_app(c, model=model, strict_model=strict_model) for c in configs]
        self._host = host
        self._ports = ports or [0] * len(configs)
        self._runners: list[web.AppRunner] = []
        self.ports: list[int] = []

    @property
    def engines(self) -> list[Engine]:
        return [app[ENGINE_KEY] for app in self.apps]

    def base_urls(self) -> list[str]:
        return [f"http://{self._host}:{p}/v1" for p in self.ports]

    async def start(self) -> None:
        for app, port in zip(self.apps, self._ports, strict=True):
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, self._host, port)
            await site.start()
            server: Any = site._server
            self.ports.append(server.sockets[0].getsockname()[1])
            self._runners.append(runner)

    async def stop_one(self, index: int) -> None:
        await self._runners[index].cleanup()

    async def stop(self) -> None:
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
