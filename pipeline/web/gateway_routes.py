"""The gateway's routes and their dependencies: the probes and metrics (`health_router`),
and the OpenAI-compatible API behind per-tenant API keys (`openai_router`).

The order of work on /v1/chat/completions, cheapest refusal first (the shed check of a
cached key already ran before FastAPI: shedding.ShedGate): deadline passed? → API key
(bearer.py; HMAC, cached) → the same shed check for the other keys → read and validate
the body → deadline passed? → the router (tokens, quota, admission with what is left of
the deadline).

No `from __future__ import annotations` here: FastAPI resolves the dependency aliases at
definition time."""

import time
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from pydantic import ValidationError
from starlette.types import Send

from pipeline.config import Settings
from pipeline.router import ChatRequest
from pipeline.web.app_state import opened
from pipeline.web.bearer import BearerTenant
from pipeline.web.deadline import RequestClock, clock_of
from pipeline.web.errors import GatewayError, deadline_passed, forbidden, invalid
from pipeline.web.openai_api import ChatCompletionBody, completion_response, relayed_events
from pipeline.web.resources import ChatRouter, GatewayResources

health_router = APIRouter()
openai_router = APIRouter()


# ---- dependencies ---------------------------------------------------------------------
# `async def` although they never await: FastAPI runs a plain `def` dependency in a worker
# thread, a hop that cost more than the rest of a refusal.

async def gateway_settings(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


async def resources(request: Request) -> GatewayResources:
    found: GatewayResources = opened(request, "resources")
    return found


GatewaySettings = Annotated[Settings, Depends(gateway_settings)]
Resources = Annotated[GatewayResources, Depends(resources)]


async def request_clock(request: Request, settings: GatewaySettings) -> RequestClock:
    clock = clock_of(request.scope)
    if clock is None:  # not behind ArrivalClock (cannot happen in this app)
        now = time.monotonic()
        clock = RequestClock(now, now + wait_budget_s(settings))
    if clock.remaining(time.monotonic()) <= 0:
        raise deadline_passed()  # before hashing the key or reading the body
    return clock


Clock = Annotated[RequestClock, Depends(request_clock)]


async def tenant(clock: Clock,  # the deadline is checked first, then the key
                 tenant_id: BearerTenant,
                 x_secanalyst_tenant: Annotated[str | None, Header()] = None) -> str:
    if x_secanalyst_tenant is not None and x_secanalyst_tenant != tenant_id:
        raise forbidden()  # a valid key asking to act for another tenant
    return tenant_id


Tenant = Annotated[str, Depends(tenant)]


# ---- probes and metrics ---------------------------------------------------------------

@health_router.get("/healthz")
@health_router.get("/livez")
async def healthz(res: Resources) -> dict[str, str]:
    """Liveness: the process is up and its resources are open. Says nothing about the
    model servers (a restart would not bring them back): see /readyz."""
    return {"status": "ok", "model": res.router.model_name}


@health_router.get("/readyz")
async def readyz(res: Resources) -> JSONResponse:
    """Readiness: some replica of some pool is healthy (circuit closed, /health 2xx),
    else 503 with the reason of each replica."""
    ready, reason = await res.router.readiness()
    return JSONResponse({"status": "ready" if ready else "not_ready",
                         "model": res.router.model_name, "reason": reason},
                        status_code=200 if ready else 503)


@health_router.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


# ---- the OpenAI-compatible API --------------------------------------------------------

@openai_router.get("/v1/models")
async def models(res: Resources, _: Tenant) -> dict[str, object]:
    return {"object": "list", "data": [{"id": res.router.model_name, "object": "model",
                                        "created": 0, "owned_by": "secanalyst"}]}


@openai_router.post("/v1/chat/completions")
async def chat_completions(http: Request, res: Resources, settings: GatewaySettings,
                           tenant_id: Tenant, clock: Clock) -> Response:
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
    stream = res.router.relay(request)
    # Wait for the first piece so a refusal (quota, saturation, context) is still an
    # HTTP status, not an error inside a 200 stream.
    first = await anext(stream)
    return ClosingStreamingResponse(
        relayed_events(stream, first, res.router.model_name),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


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
