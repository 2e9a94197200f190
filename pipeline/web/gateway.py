"""The OpenAI-compatible LLM gateway: /v1/chat/completions (streaming or not) and
/v1/models for other internal tools, behind per-tenant API keys; /metrics; /healthz (or
/livez: the process answers) and /readyz (it can serve: some model server replica is
healthy; 503 with the reason otherwise).

Everything that can refuse a request raises; `errors.install_error_handlers` turns it into
the HTTP answer, in one place.

Under overload, refusing must cost less than serving. The order of work on
/v1/chat/completions, cheapest refusal first: arrival stamped (deadline.ArrivalClock) →
deadline passed? → shed? for a cached key, before FastAPI (shedding.ShedGate: admission
queue full, or its expected wait longer than what is left of the deadline) → API key
(HMAC, cached) → the same shed check for the other keys → read and validate the body →
deadline passed? → the router (tokens, quota, admission with what is left of the
deadline).

No `from __future__ import annotations` here: FastAPI must resolve the local
dependency aliases (Resources, Tenant) of the endpoints at definition time."""

import asyncio
import contextlib
import gc
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated

import anyio
from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.config import Settings
from pipeline.router import ChatRequest, Completion, RouterError
from pipeline.router.metrics import router_metrics
from pipeline.web.deadline import ArrivalClock, RequestClock, clock_of, gateway_timing_metrics
from pipeline.web.errors import (
    GatewayError,
    deadline_passed,
    forbidden,
    install_error_handlers,
    invalid,
    unauthorized,
)
from pipeline.web.loop_lag import watch_loop_lag
from pipeline.web.openai_api import (
    DONE,
    ChatCompletionBody,
    chunk,
    completion_response,
    error_event,
    usage_block,
)
from pipeline.web.resources import ChatRouter, GatewayResources, open_gateway_resources
from pipeline.web.shedding import ShedGate

ResourceFactory = Callable[[Settings], AbstractAsyncContextManager[GatewayResources]]


class BodySizeLimit:
    """Refuses a body whose declared Content-Length is over the limit (pure ASGI)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and value.isdigit() \
                        and int(value) > self.max_bytes:
                    response = JSONResponse(
                        {"error": {"message": "request body too large",
                                   "type": "invalid_request_error", "param": None,
                                   "code": None}}, status_code=413)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


class ClosingStreamingResponse(StreamingResponse):
    """Closes its body iterator however the response ends — a client disconnect included —
    so the router request behind it is cancelled, metered and settled at once (with the
    tokens processed up to the cut), not whenever the generator is garbage-collected."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


def create_gateway_app(settings: Settings,
                       open_resources: ResourceFactory = open_gateway_resources) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        router_metrics()  # register the metric families before the first scrape
        gateway_timing_metrics()
        async with open_resources(settings) as resources:
            app.state.resources = resources
            # The tokenizer and its libraries leave ~400k long-lived objects; a full
            # collection scanning them stalls the event loop ~200 ms (measured), which
            # every request waiting then pays. Frozen, the collector skips them.
            gc.collect()
            gc.freeze()
            lag = asyncio.create_task(watch_loop_lag())
            try:
                yield
            finally:
                lag.cancel()

    app = FastAPI(title="secanalyst LLM gateway", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.add_middleware(BodySizeLimit, max_bytes=settings.gateway.max_body_bytes)
    app.add_middleware(ShedGate)
    # Added last = outermost: the arrival is stamped before anything else runs.
    app.add_middleware(ArrivalClock, default_wait_s=wait_budget_s(settings))
    install_error_handlers(app)

    # Dependencies are `async def` although they never await: FastAPI runs a plain `def`
    # dependency in a worker thread, a hop that cost more than the rest of a refusal.
    async def resources(request: Request) -> GatewayResources:
        found: GatewayResources | None = getattr(request.app.state, "resources", None)
        if found is None:
            raise RuntimeError("gateway resources are not open: run the app's lifespan")
        return found

    Resources = Annotated[GatewayResources, Depends(resources)]

    async def request_clock(request: Request) -> RequestClock:
        clock = clock_of(request.scope)
        if clock is None:  # not behind ArrivalClock (cannot happen in this app)
            now = time.monotonic()
            clock = RequestClock(now, now + wait_budget_s(settings))
        if clock.remaining(time.monotonic()) <= 0:
            raise deadline_passed()  # before hashing the key or reading the body
        return clock

    Clock = Annotated[RequestClock, Depends(request_clock)]

    async def tenant(res: Resources, clock: Clock,  # the deadline is checked first
                     authorization: Annotated[str | None, Header()] = None,
                     x_secanalyst_tenant: Annotated[str | None, Header()] = None) -> str:
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise unauthorized()
        tenant_id = await res.auth.tenant_for(key.strip())
        if tenant_id is None:
            raise unauthorized()
        if x_secanalyst_tenant is not None and x_secanalyst_tenant != tenant_id:
            raise forbidden()  # a valid key asking to act for another tenant
        return tenant_id

    Tenant = Annotated[str, Depends(tenant)]

    @app.get("/healthz")
    @app.get("/livez")
    async def healthz(res: Resources) -> dict[str, str]:
        """Liveness: the process is up and its resources are open. Says nothing about the
        model servers (a restart would not bring them back): see /readyz."""
        return {"status": "ok", "model": res.router.model_name}

    @app.get("/readyz")
    async def readyz(res: Resources) -> JSONResponse:
        """Readiness: some replica of some pool is healthy (circuit closed, /health 2xx),
        else 503 with the reason of each replica."""
        ready, reason = await res.router.readiness()
        return JSONResponse({"status": "ready" if ready else "not_ready",
                             "model": res.router.model_name, "reason": reason},
                            status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(res: Resources, _: Tenant) -> dict[str, object]:
        return {"object": "list", "data": [{"id": res.router.model_name, "object": "model",
                                            "created": 0, "owned_by": "secanalyst"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(http: Request, res: Resources, tenant_id: Tenant,
                               clock: Clock) -> Response:
        if res.shedder is not None:
            refusal = res.shedder.shed(tenant_id, clock.remaining(time.monotonic()))
            if refusal is not None:  # (the router counted it: rejections metric)
                raise refusal
        body = _parse_body(await http.body())
        remaining = clock.remaining(time.monotonic())
        if remaining <= 0:
            raise deadline_passed()
        request = _chat_request(settings, res.router, body, tenant_id, remaining)
        if not body.stream:
            completion = await res.router.complete(request)
            # Arrival → dispatch: what the request waited in this process before the
            # model server started on it.
            waited = time.monotonic() - clock.arrival - completion.latency_ms / 1000
            return JSONResponse(completion_response(completion, res.router.model_name),
                                headers={"Server-Timing": f"wait;dur={waited * 1000:.1f}"})
        stream = res.router.stream(request)
        # Wait for the first piece so a refusal (quota, saturation, context) is still an
        # HTTP status, not an error inside a 200 stream.
        first = await anext(stream)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return ClosingStreamingResponse(
            _events(stream, first, res.router.model_name, include_usage),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    return app


def wait_budget_s(settings: Settings) -> float:
    """How long a request may wait for admission, from its arrival, unless it asks for
    less: gateway.queue_deadline_s, else llm.max_queue_wait_s."""
    return settings.gateway.queue_deadline_s or settings.llm.max_queue_wait_s


def _parse_body(raw: bytes) -> ChatCompletionBody:
    """Parsed here, after the cheap refusals, rather than by FastAPI before them."""
    try:
        return ChatCompletionBody.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _chat_request(settings: Settings, router: ChatRouter, body: ChatCompletionBody,
                  tenant_id: str, deadline_s: float) -> ChatRequest:
    if body.model != router.model_name:
        raise GatewayError(404, f"the model {body.model!r} does not exist",
                           "invalid_request_error", param="model")
    if len(body.messages) > settings.gateway.max_messages:
        raise invalid("messages", f"at most {settings.gateway.max_messages} messages")
    max_tokens = body.requested_max_tokens() or settings.llm.max_output_tokens
    if max_tokens > settings.gateway.max_tokens_limit:
        raise invalid("max_tokens", f"must be at most {settings.gateway.max_tokens_limit}")
    return ChatRequest(
        tenant_id=tenant_id,
        messages=[m.model_dump(exclude_none=True) for m in body.messages],
        max_tokens=max_tokens, temperature=body.temperature,
        extra_body=body.sampling_extras(), deadline_s=deadline_s)


async def _events(stream: AsyncIterator[str | Completion], first: str | Completion,
                  model: str, include_usage: bool) -> AsyncIterator[str]:
    response_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    item: str | Completion = first
    try:
        yield chunk(response_id, model, created, delta={"role": "assistant", "content": ""})
        while isinstance(item, str):
            yield chunk(response_id, model, created, delta={"content": item})
            item = await anext(stream)
        yield chunk(response_id, model, created, finish_reason=item.finish_reason or "stop")
        if include_usage:
            yield chunk(response_id, model, created, usage=usage_block(item))
        yield DONE
    except RouterError:  # after the 200 was sent: an error event ends the stream
        yield error_event("the model server failed mid-stream", "upstream_error")
    except StopAsyncIteration:
        yield error_event("the stream ended early", "upstream_error")
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]
