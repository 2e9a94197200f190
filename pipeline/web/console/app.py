"""The review console: sign-in, the verdict queue, one verdict with feedback, incidents,
usage charts and the admin pages as server-rendered pages, and the same data under /api/.

The routes live by area in pipeline/web/console/routes/, their shared dependencies in
deps.py; this module assembles the app. Every tenant query runs inside `tenant_scope`
(row-level security in the database); every POST checks the session's CSRF token; every
privileged action writes audit_log."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jinja2
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.config import Settings
from pipeline.web.app_state import ResourceFactory, opening
from pipeline.web.console import render
from pipeline.web.console.errors import install_error_handlers
from pipeline.web.console.resources import ConsoleResources, open_console_resources
from pipeline.web.console.routes import admin, auth, incidents, queue, usage, verdicts

HERE = Path(__file__).parent
_HEADERS = [
    (b"content-security-policy",
     b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
     b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
]


class SecurityHeaders:
    """Strict CSP (no inline script or style), no framing, no sniffing (pure ASGI)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _HEADERS
            await send(message)

        await self.app(scope, receive, with_headers)


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["pretty_json"] = lambda v: json.dumps(v, indent=2, sort_keys=True,
                                                       default=str)
    env.filters["when"] = lambda v: v.strftime("%Y-%m-%d %H:%M:%S") if v else ""
    env.filters["attack_url"] = render.attack_url
    env.filters["runbook_link"] = render.runbook_link
    return Jinja2Templates(env=env)


def create_console_app(
        settings: Settings,
        open_resources: ResourceFactory[ConsoleResources] = open_console_resources) -> FastAPI:
    # /api/docs is served from the console's own copy of Swagger UI (5.x, which reads
    # OpenAPI 3.1): no CDN, so it works offline and under the strict CSP.
    app = FastAPI(title="secanalyst review console",
                  lifespan=opening(settings, open_resources, "resources"), docs_url=None,
                  redoc_url=None, openapi_url="/api/openapi.json")
    app.state.settings = settings  # read by the dependencies of deps.py
    app.state.templates = templates = make_templates()
    app.add_middleware(SecurityHeaders)
    app.mount("/static/swagger-ui", StaticFiles(directory=_swagger_ui_assets()),
              name="swagger-ui")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    install_error_handlers(app, templates)
    if settings.console.oidc is not None:  # "Sign in with <provider>": oidc.py
        from pipeline.web.console.oidc import create_oidc_router

        app.include_router(create_oidc_router(settings))
    # queue before verdicts: /api/verdicts/newest before /api/verdicts/{verdict_id}
    for area in (auth, queue, verdicts, incidents, usage, admin):
        app.include_router(area.router)
    return app


def _swagger_ui_assets() -> Path:
    """The static folder of the swagger-ui-py package, found without importing it (its
    __init__ loads web-framework adapters the console does not need)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the console's /api/docs needs the swagger-ui-py package")
    return Path(next(iter(spec.submodule_search_locations))) / "static"
