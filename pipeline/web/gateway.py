"""The OpenAI-compatible LLM gateway: /v1/chat/completions (streaming or not) and
/v1/models for other internal tools, behind per-tenant API keys; /metrics; /healthz (or
/livez: the process answers) and /readyz (it can serve: some model server replica is
healthy; 503 with the reason otherwise).

Everything that can refuse a request raises; `errors.install_error_handlers` turns it into
the HTTP answer, in one place.

Under overload, refusing must cost less than serving. The order of work on
/v1/chat/completions, cheapest refusal first: arrival stamped (deadline.ArrivalClock) →
deadline passed? → shed? for a cached key, before FastAPI (shedding.ShedGate: admission
queue full, or its expected wait longer than what is left of the deadline) → then the
endpoint's own checks (gateway_routes.py). This module assembles the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.collector import settle_for_serving
from pipeline.config import Settings
from pipeline.router.metrics import router_metrics
from pipeline.web.app_state import ResourceFactory
from pipeline.web.bearer import use_key_authenticator
from pipeline.web.deadline import ArrivalClock, gateway_timing_metrics
from pipeline.web.errors import install_error_handlers
from pipeline.web.gateway_routes import health_router, openai_router, wait_budget_s
from pipeline.web.loop_lag import watch_loop_lag
from pipeline.web.resources import GatewayResources, open_gateway_resources
from pipeline.web.shedding import ShedGate


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


def create_gateway_app(
        settings: Settings,
        open_resources: ResourceFactory[GatewayResources] = open_gateway_resources) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        router_metrics()  # register the metric families before the first scrape
        gateway_timing_metrics()
        async with open_resources(settings) as resources:
            app.state.resources = resources
            use_key_authenticator(app, resources.auth)
            settle_for_serving()  # long-lived objects frozen, gen-0 threshold raised
            lag = asyncio.create_task(watch_loop_lag())
            try:
                yield
            finally:
                lag.cancel()

    app = FastAPI(title="secanalyst LLM gateway", lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.settings = settings  # read by the dependencies of gateway_routes.py
    app.add_middleware(BodySizeLimit, max_bytes=settings.gateway.max_body_bytes)
    app.add_middleware(ShedGate)
    # Added last = outermost: the arrival is stamped before anything else runs.
    app.add_middleware(ArrivalClock, default_wait_s=wait_budget_s(settings))
    install_error_handlers(app)
    app.include_router(health_router)
    app.include_router(openai_router)
    return app
