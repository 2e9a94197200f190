"""The review console: sign-in, the verdict queue, one verdict with feedback, usage charts
and the audit log as server-rendered pages, and the same data under /api/.

Every tenant query runs inside `tenant_scope` (row-level security in the database);
every POST checks the session's CSRF token; every privileged action writes audit_log.

No `from __future__ import annotations` here: FastAPI resolves the dependency aliases at
definition time."""

import csv
import importlib.util
import io
import json
import re
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, FastAPI, Form, Header, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pipeline.analysis import attack as attack_catalog
from pipeline.config import Settings
from pipeline.store import console as store
from pipeline.store import incidents
from pipeline.store.apikeys import load_pepper
from pipeline.web.console import charts, render
from pipeline.web.console.errors import (
    ConsoleError,
    NotSignedIn,
    bad_csrf,
    forbidden,
    install_error_handlers,
    invalid,
    not_found,
)
from pipeline.web.console.resources import ConsoleResources, open_console_resources
from pipeline.web.console.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    hash_password,
    new_csrf_token,
    same_token,
    verify_password,
)
from schemas.verdict import SEVERITIES

ResourceFactory = Callable[[Settings], AbstractAsyncContextManager[ConsoleResources]]
HERE = Path(__file__).parent
_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
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


class FeedbackBody(BaseModel):
    action: str = Field(pattern="^(confirm|severity|false_positive|attack|note)$")
    severity: str | None = None
    attack: list[str] | None = Field(default=None, max_length=16)
    note: str | None = Field(default=None, max_length=4000)


class IncidentChange(BaseModel):
    action: str = Field(pattern="^(assign|start|resolve)$")
    ids: list[int] = Field(min_length=1, max_length=incidents.MAX_BULK)
    assignee: int | None = None
    resolution: str | None = None
    note: str | None = Field(default=None, max_length=4000)


def create_console_app(settings: Settings,
                       open_resources: ResourceFactory = open_console_resources) -> FastAPI:
    cfg = settings.console
    templates = make_templates()
    pricing = {name: (p.input_per_million, p.output_per_million)
               for name, p in settings.usage.pricing.items()}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_resources(settings) as resources:
            app.state.resources = resources
            yield

    # /api/docs is served below from the console's own copy of Swagger UI (5.x, which
    # reads OpenAPI 3.1): no CDN, so it works offline and under the strict CSP.
    app = FastAPI(title="secanalyst review console", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url="/api/openapi.json")
    app.add_middleware(SecurityHeaders)
    app.mount("/static/swagger-ui", StaticFiles(directory=_swagger_ui_assets()),
              name="swagger-ui")
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    install_error_handlers(app, templates)

    def resources(request: Request) -> ConsoleResources:
        found: ConsoleResources | None = getattr(request.app.state, "resources", None)
        if found is None:
            raise RuntimeError("console resources are not open: run the app's lifespan")
        return found

    if cfg.oidc is not None:  # "Sign in with <provider>": pipeline/web/console/oidc.py
        from pipeline.web.console.oidc import create_oidc_router

        app.include_router(create_oidc_router(settings, templates, resources))

    Resources = Annotated[ConsoleResources, Depends(resources)]

    async def session(request: Request, res: Resources) -> store.Session:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            raise NotSignedIn()
        async with res.pool.connection() as conn:
            found = await store.find_session(conn, token)
        if found is None:
            raise NotSignedIn()
        return found

    Signed = Annotated[store.Session, Depends(session)]

    async def admin(signed: Signed) -> store.Session:
        if signed.user.role != "admin":
            raise forbidden()
        return signed

    Admin = Annotated[store.Session, Depends(admin)]

    def page(request: Request, name: str, signed: store.Session | None,
             **context: Any) -> HTMLResponse:
        context.update(user=signed.user if signed else None,
                       csrf=signed.csrf_token if signed else "")
        return templates.TemplateResponse(request, name, context)

    # ---- sign-in ----------------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    async def login_form(request: Request, error: str | None = None) -> Response:
        token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_csrf_token()
        response = templates.TemplateResponse(
            request, "login.html", {"user": None, "csrf": token, "error": error,
                                    "oidc": cfg.oidc.provider_name if cfg.oidc else None})
        response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                            secure=cfg.cookie_secure, path="/login")
        return response

    @app.post("/login", include_in_schema=False)
    async def login(request: Request, res: Resources, email: Annotated[str, Form()],
                    password: Annotated[str, Form()],
                    csrf_token: Annotated[str, Form()]) -> Response:
        if not same_token(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token):
            raise bad_csrf()
        async with res.pool.connection() as conn:
            user = await store.find_user(conn, email.strip())
            throttled = user is not None and await store.recent_failed_sign_ins(
                conn, user.id, cfg.failed_sign_in_window_s) >= cfg.max_failed_sign_ins
            ok = verify_password(user.password_hash if user else None, password)
            if user is None or not ok or throttled:
                if user is not None:
                    async with store.tenant_scope(res.pool, user.tenant_id) as scoped:
                        await store.audit(scoped, user, "auth.sign_in_failed", None)
                return RedirectResponse("/login?error=1", status_code=303)
            token, _ = await store.create_session(conn, user.id, cfg.session_ttl_s)
            await conn.commit()
        async with store.tenant_scope(res.pool, user.tenant_id) as scoped:
            await store.audit(scoped, user, "auth.sign_in", None)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                            secure=cfg.cookie_secure, max_age=int(cfg.session_ttl_s))
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request, res: Resources, signed: Signed,
                     csrf_token: Annotated[str, Form()]) -> Response:
        if not same_token(signed.csrf_token, csrf_token):
            raise bad_csrf()
        async with res.pool.connection() as conn:
            await store.delete_session(conn, request.cookies.get(SESSION_COOKIE, ""))
            await conn.commit()
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as scoped:
            await store.audit(scoped, signed.user, "auth.sign_out", None)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response

    # ---- the queue --------------------------------------------------------------------

    def queue_filter(severity: str | None = None, status: str | None = None,
                     rule: str | None = None, agent: str | None = None,
                     src_ip: str | None = None, dst_ip: str | None = None,
                     user: str | None = None, host: str | None = None,
                     technique: str | None = None, since: str | None = None,
                     until: str | None = None, q: str | None = None,
                     cursor: str | None = None) -> store.QueueFilter:
        if severity and severity not in SEVERITIES:
            raise invalid("severity", f"one of {', '.join(SEVERITIES)}")
        if status and status not in store.ANALYST_STATUSES:
            raise invalid("status", f"one of {', '.join(store.ANALYST_STATUSES)}")
        if technique and not _TECHNIQUE.match(technique.strip().upper()):
            raise invalid("technique", "an ATT&CK id such as T1110 or T1110.001")
        after = None
        if cursor:
            try:
                after = store.decode_cursor(cursor)
            except ValueError as exc:
                raise invalid("cursor", "not a cursor of this queue") from exc
        return store.QueueFilter(
            severity=severity or None, status=status or None, rule=(rule or "").strip() or None,
            agent=(agent or "").strip() or None, src_ip=_entity(src_ip),
            dst_ip=_entity(dst_ip), user=_entity(user), host=_entity(host),
            technique=technique.strip().upper() if technique else None,
            since=_when("since", since), until=_when("until", until),
            search=(q or "").strip()[:200] or None, after=after)

    Filter = Annotated[store.QueueFilter, Depends(queue_filter)]

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def queue_page(request: Request, res: Resources, signed: Signed,
                         flt: Filter) -> Response:
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            result = await store.verdict_queue(conn, signed.user.tenant_id, flt,
                                               cfg.page_size)
            newest = await store.newest_id(conn)
        params = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
        return page(request, "queue.html", signed, page=result, params=params,
                    severities=SEVERITIES, statuses=store.ANALYST_STATUSES, newest=newest,
                    poll_ms=int(cfg.poll_interval_s * 1000))

    @app.get("/api/verdicts", tags=["verdicts"])
    async def api_queue(res: Resources, signed: Signed, flt: Filter,
                        limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
        """The tenant's verdicts, newest first, with filters; keyset pagination via
        `next_cursor`."""
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            result = await store.verdict_queue(conn, signed.user.tenant_id, flt, limit)
        return {"items": _jsonable(result.rows), "next_cursor": result.next_cursor}

    @app.get("/api/verdicts/newest", tags=["verdicts"])
    async def api_newest(res: Resources, signed: Signed) -> dict[str, int]:
        """The id of the newest verdict (the queue page polls it for live updates)."""
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            return {"id": await store.newest_id(conn)}

    # ---- one verdict ------------------------------------------------------------------

    async def load_verdict(res: ConsoleResources, signed: store.Session,
                           verdict_id: int) -> dict[str, Any]:
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            found = await store.verdict_detail(conn, verdict_id)
            if found is None:
                raise not_found()
            found["audit"] = await store.audit_entries(conn, 20, f"verdict:{verdict_id}")
            found["related"] = await store.related_alerts(conn, verdict_id,
                                                          cfg.related_window_s)
        return found

    @app.get("/verdicts/{verdict_id}", response_class=HTMLResponse, include_in_schema=False)
    async def verdict_page(request: Request, res: Resources, signed: Signed,
                           verdict_id: int) -> Response:
        found = await load_verdict(res, signed, verdict_id)
        return page(request, "verdict.html", signed, v=found, severities=SEVERITIES,
                    original=render.pretty_original(found.get("original")),
                    pivots=render.entity_links(found.get("facts"), found.get("agent_name")),
                    wazuh_url=_wazuh_link(cfg.wazuh_dashboard_url, found),
                    related_chart=_related_chart(found, cfg.related_window_s),
                    window_min=round(cfg.related_window_s / 60))

    @app.get("/runbooks/{slug}", response_class=HTMLResponse, include_in_schema=False)
    async def runbook_page(request: Request, signed: Signed, slug: str) -> Response:
        found = render.render_runbook(slug)
        if found is None:
            raise not_found()
        title, html = found
        return page(request, "runbook.html", signed, slug=slug, title=title, html=html)

    @app.get("/api/docs", response_class=HTMLResponse, include_in_schema=False)
    async def api_docs(request: Request) -> Response:
        return templates.TemplateResponse(request, "api_docs.html", {})

    @app.get("/api/verdicts/{verdict_id}", tags=["verdicts"])
    async def api_verdict(res: Resources, signed: Signed, verdict_id: int) -> dict[str, Any]:
        """One verdict with its raw alert, cited passages, feedback and audit trail."""
        return _jsonable(await load_verdict(res, signed, verdict_id))

    async def give_feedback(res: ConsoleResources, signed: store.Session, verdict_id: int,
                            body: FeedbackBody) -> None:
        if body.action == "severity" and body.severity not in SEVERITIES:
            raise invalid("severity", f"one of {', '.join(SEVERITIES)}")
        techniques = None
        if body.action == "attack":
            techniques = [_technique(t) for t in (body.attack or []) if t.strip()]
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            try:
                done = await store.apply_feedback(
                    conn, signed.user, verdict_id, body.action, severity=body.severity,
                    attack=techniques, note=(body.note or "").strip() or None)
            except store.FeedbackRejected as exc:
                raise ConsoleError(422, exc.message) from exc
        if not done:
            raise not_found()

    @app.post("/verdicts/{verdict_id}/feedback", include_in_schema=False)
    async def feedback_form(res: Resources, signed: Signed, verdict_id: int,
                            action: Annotated[str, Form()],
                            csrf_token: Annotated[str, Form()],
                            severity: Annotated[str | None, Form()] = None,
                            attack: Annotated[str | None, Form()] = None,
                            note: Annotated[str | None, Form()] = None) -> Response:
        if not same_token(signed.csrf_token, csrf_token):
            raise bad_csrf()
        try:
            body = FeedbackBody(action=action, severity=severity, note=note,
                                attack=None if attack is None
                                else [a.strip() for a in attack.split(",")])
        except ValueError as exc:
            raise invalid("action", "unknown feedback") from exc
        await give_feedback(res, signed, verdict_id, body)
        return RedirectResponse(f"/verdicts/{verdict_id}", status_code=303)

    @app.post("/api/verdicts/{verdict_id}/feedback", tags=["verdicts"])
    async def api_feedback(res: Resources, signed: Signed, verdict_id: int,
                           body: FeedbackBody,
                           x_csrf_token: Annotated[str | None, Header()] = None
                           ) -> dict[str, bool]:
        """Confirm, change severity, mark false positive, replace the ATT&CK list or add a
        note. Needs the session's CSRF token in `X-CSRF-Token`."""
        if not same_token(signed.csrf_token, x_csrf_token):
            raise bad_csrf()
        await give_feedback(res, signed, verdict_id, body)
        return {"ok": True}

    # ---- incidents: one row per incident key, with a workflow ---------------------------

    def incident_filter(signed: Signed, status: str | None = None,
                        assignee: str | None = None) -> incidents.IncidentFilter:
        if status and status not in incidents.STATUSES:
            raise invalid("status", f"one of {', '.join(incidents.STATUSES)}")
        if assignee in (None, "", "any"):
            return incidents.IncidentFilter(status=status or None)
        if assignee == "none":
            return incidents.IncidentFilter(status=status or None, unassigned=True)
        if assignee == "me":
            return incidents.IncidentFilter(status=status or None,
                                            assignee_id=signed.user.id)
        if not assignee.isdigit():
            raise invalid("assignee", "me, none or an account id")
        return incidents.IncidentFilter(status=status or None, assignee_id=int(assignee))

    IncidentFlt = Annotated[incidents.IncidentFilter, Depends(incident_filter)]

    @app.get("/incidents", response_class=HTMLResponse, include_in_schema=False)
    async def incidents_page(request: Request, res: Resources, signed: Signed,
                             flt: IncidentFlt, error: str | None = None) -> Response:
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            rows = await incidents.incident_queue(conn, flt, cfg.page_size)
            people = await incidents.tenant_analysts(conn)
        params = {k: v for k, v in request.query_params.items() if v and k != "error"}
        return page(request, "incidents.html", signed, rows=rows, people=people,
                    params=params, statuses=incidents.STATUSES,
                    resolutions=incidents.RESOLUTIONS, error=error)

    @app.get("/api/incidents", tags=["incidents"])
    async def api_incidents(res: Resources, signed: Signed, flt: IncidentFlt,
                            limit: Annotated[int, Query(ge=1, le=500)] = 50
                            ) -> list[dict[str, Any]]:
        """The tenant's incidents (verdicts sharing an incident key), most recently seen
        first; `assignee=me|none|<id>`, `status=new|in_progress|resolved`."""
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            return _jsonable(await incidents.incident_queue(conn, flt, limit))

    async def load_incident(res: ConsoleResources, signed: store.Session,
                            incident_id: int) -> dict[str, Any]:
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            found = await incidents.incident_detail(conn, incident_id)
            if found is None:
                raise not_found()
            found["audit"] = await store.audit_entries(conn, 50, f"incident:{incident_id}")
            found["people"] = await incidents.tenant_analysts(conn)
        return found

    @app.get("/incidents/{incident_id}", response_class=HTMLResponse,
             include_in_schema=False)
    async def incident_page(request: Request, res: Resources, signed: Signed,
                            incident_id: int) -> Response:
        found = await load_incident(res, signed, incident_id)
        return page(request, "incident.html", signed, i=found,
                    resolutions=incidents.RESOLUTIONS)

    @app.get("/api/incidents/{incident_id}", tags=["incidents"])
    async def api_incident(res: Resources, signed: Signed,
                           incident_id: int) -> dict[str, Any]:
        """One incident with its newest alerts' verdicts and its audit trail."""
        return _jsonable(await load_incident(res, signed, incident_id))

    async def change_incidents(res: ConsoleResources, signed: store.Session,
                               body: IncidentChange) -> int:
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            try:
                if body.action == "assign":
                    return await incidents.assign(conn, signed.user, body.ids,
                                                  body.assignee)
                return await incidents.set_status(
                    conn, signed.user, body.ids,
                    "resolved" if body.action == "resolve" else "in_progress",
                    body.resolution, (body.note or "").strip() or None)
            except incidents.IncidentRejected as exc:
                raise ConsoleError(422, str(exc)) from exc

    @app.post("/incidents/change", include_in_schema=False)
    async def incidents_form(res: Resources, signed: Signed,
                             csrf_token: Annotated[str, Form()],
                             action: Annotated[str, Form()],
                             ids: Annotated[list[int], Form()],
                             back: Annotated[str, Form()] = "/incidents",
                             assignee: Annotated[str | None, Form()] = None,
                             resolution: Annotated[str | None, Form()] = None,
                             note: Annotated[str | None, Form()] = None) -> Response:
        if not same_token(signed.csrf_token, csrf_token):
            raise bad_csrf()
        try:
            body = IncidentChange(
                action=action, ids=ids, resolution=resolution or None, note=note,
                assignee=(signed.user.id if assignee == "me" else
                          int(assignee) if assignee and assignee.isdigit() else None))
        except ValueError as exc:
            raise invalid("action", "assign, start or resolve up to "
                          f"{incidents.MAX_BULK} incidents") from exc
        await change_incidents(res, signed, body)
        # back to the page the change was made on (only this console's incident pages)
        target = back if re.fullmatch(r"/incidents(/\d+)?(\?[\w=&%-]*)?", back) else "/incidents"
        return RedirectResponse(target, status_code=303)

    @app.post("/api/incidents/change", tags=["incidents"])
    async def api_incidents_change(res: Resources, signed: Signed, body: IncidentChange,
                                   x_csrf_token: Annotated[str | None, Header()] = None
                                   ) -> dict[str, int]:
        """Assign (`assignee`: an account id, null to unassign), start, or resolve (with
        `resolution` and a `note`) up to 200 incidents at once; every change audited.
        Needs the session's CSRF token in `X-CSRF-Token`."""
        if not same_token(signed.csrf_token, x_csrf_token):
            raise bad_csrf()
        return {"changed": await change_incidents(res, signed, body)}

    # ---- usage (everyone, read-only, own tenant) and audit (admins) --------------------

    async def overview(res: ConsoleResources, signed: store.Session,
                       days: int) -> dict[str, Any]:
        until = datetime.now(UTC)
        since = until - timedelta(days=days)
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            found = await store.usage_overview(
                conn, since=since, until=until, pricing=pricing,
                # only the platform's admins look across tenants; its analysts do not
                all_tenants=(signed.user.role == "admin"
                             and signed.user.tenant_id == cfg.platform_tenant))
            await store.audit(conn, signed.user, "usage.view", None, {"days": days})
        return found

    Days = Annotated[int, Query(ge=1, le=366)]

    @app.get("/usage", response_class=HTMLResponse, include_in_schema=False)
    async def usage_page(request: Request, res: Resources, signed: Signed,
                         days: Days = 30) -> Response:
        data = await overview(res, signed, days)
        return page(request, "usage.html", signed, days=days, data=data,
                    charts=_usage_charts(data))

    @app.get("/api/usage", tags=["usage"])
    async def api_usage(res: Resources, signed: Signed, days: Days = 30) -> dict[str, Any]:
        """Tokens, estimated cost and TTFT per day/tenant/model, rejections by reason,
        top rules by tokens: the signed-in tenant's (every tenant's for the platform's
        admins). Read-only; analysts included."""
        return _jsonable(await overview(res, signed, days))

    @app.get("/usage.csv", tags=["usage"])
    async def usage_csv(res: Resources, signed: Signed, days: Days = 30) -> Response:
        data = await overview(res, signed, days)
        out = io.StringIO()
        fields = ["day", "tenant_id", "model_name", "requests", "tokens", "cost",
                  "ttft_p50_ms", "ttft_p95_ms"]
        writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(data["daily"])
        return Response(out.getvalue(), media_type="text/csv", headers={
            "Content-Disposition": 'attachment; filename="secanalyst-usage.csv"'})

    @app.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    async def audit_page(request: Request, res: Resources, signed: Admin) -> Response:
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            entries = await store.audit_entries(conn, 200)
        return page(request, "audit.html", signed, entries=entries)

    @app.get("/api/audit", tags=["audit"])
    async def api_audit(res: Resources, signed: Admin) -> list[dict[str, Any]]:
        """The tenant's audit log, newest first (admins)."""
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            return _jsonable(await store.audit_entries(conn, 200))

    # ---- accounts of the tenant (admins) ----------------------------------------------

    @app.get("/admin/users", response_class=HTMLResponse, include_in_schema=False)
    async def users_page(request: Request, res: Resources, signed: Admin,
                         error: str | None = None) -> Response:
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            users = await store.tenant_users(conn)
        return page(request, "users.html", signed, users=users, error=error)

    @app.get("/api/users", tags=["accounts"])
    async def api_users(res: Resources, signed: Admin) -> list[dict[str, Any]]:
        """The tenant's console accounts (never their password hashes; admins)."""
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            return _jsonable(await store.tenant_users(conn))

    @app.post("/admin/users", include_in_schema=False)
    async def users_create(res: Resources, signed: Admin, email: Annotated[str, Form()],
                           role: Annotated[str, Form()], password: Annotated[str, Form()],
                           csrf_token: Annotated[str, Form()]) -> Response:
        if not same_token(signed.csrf_token, csrf_token):
            raise bad_csrf()
        if role not in ("analyst", "admin"):
            raise invalid("role", "analyst or admin")
        if not _EMAIL.match(email.strip()):
            raise invalid("email", "not an email address")
        try:
            password_hash = hash_password(password)
        except ValueError as exc:
            raise invalid("password", str(exc)) from exc
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            user_id = await store.add_tenant_user(conn, signed.user.tenant_id, email.strip(),
                                                  role, password_hash)
            if user_id is not None:
                await store.audit(conn, signed.user, "user.create", f"user:{user_id}",
                                  {"email": email.strip(), "role": role})
        if user_id is None:
            return RedirectResponse("/admin/users?error=taken", status_code=303)
        return RedirectResponse("/admin/users", status_code=303)

    @app.post("/admin/users/{user_id}/disabled", include_in_schema=False)
    async def users_disable(res: Resources, signed: Admin, user_id: int,
                            disabled: Annotated[bool, Form()],
                            csrf_token: Annotated[str, Form()]) -> Response:
        if not same_token(signed.csrf_token, csrf_token):
            raise bad_csrf()
        if user_id == signed.user.id:
            raise invalid("user", "you cannot disable your own account")
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            if not await store.set_user_disabled(conn, user_id, disabled):
                raise ConsoleError(404, "no such user")
            await store.audit(conn, signed.user, "user.disable" if disabled else "user.enable",
                              f"user:{user_id}")
        return RedirectResponse("/admin/users", status_code=303)

    # ---- the tenant's gateway API keys (admins) -----------------------------------------

    def key_page(request: Request, signed: store.Session, keys: list[dict[str, Any]],
                 new_key: str | None = None) -> HTMLResponse:
        response = page(request, "apikeys.html", signed, keys=keys, new_key=new_key)
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/admin/apikeys", response_class=HTMLResponse, include_in_schema=False)
    async def keys_page(request: Request, res: Resources, signed: Admin) -> Response:
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            keys = await store.tenant_api_keys(conn)
        return key_page(request, signed, keys)

    @app.post("/admin/apikeys", response_class=HTMLResponse, include_in_schema=False)
    async def keys_create(request: Request, res: Resources, signed: Admin,
                          csrf_token: Annotated[str, Form()],
                          name: Annotated[str, Form(max_length=100)] = "") -> Response:
        if not same_token(signed.csrf_token, csrf_token):
            raise bad_csrf()
        pepper = load_pepper(settings)
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            key_id, key = await store.create_api_key(conn, pepper, signed.user.tenant_id,
                                                     name.strip())
            await store.audit(conn, signed.user, "apikey.create", f"apikey:{key_id}",
                              {"name": name.strip()})
            keys = await store.tenant_api_keys(conn)
        return key_page(request, signed, keys, new_key=key)  # shown once, never stored

    @app.post("/admin/apikeys/{key_id}/revoke", include_in_schema=False)
    async def keys_revoke(res: Resources, signed: Admin, key_id: str,
                          csrf_token: Annotated[str, Form()]) -> Response:
        if not same_token(signed.csrf_token, csrf_token):
            raise bad_csrf()
        async with store.tenant_scope(res.pool, signed.user.tenant_id) as conn:
            if not await store.revoke_api_key(conn, key_id):
                raise ConsoleError(404, "no such active key")
            await store.audit(conn, signed.user, "apikey.revoke", f"apikey:{key_id}")
        return RedirectResponse("/admin/apikeys", status_code=303)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def _when(param: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise invalid(param, "an ISO date or time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_LANES = (("agent", "agent"), ("src_ip", "source"), ("user", "user"))


def _related_chart(verdict: dict[str, Any], window_s: float) -> Markup | None:
    """The related alerts as a timeline: one lane per entity this verdict has."""
    facts = verdict.get("facts") or {}
    lanes = {via: f"{name} {facts[via]}" for via, name in _LANES if facts.get(via)}
    if not lanes or verdict.get("created_at") is None:
        return None
    events = [charts.TimelineEvent(r["created_at"], lanes[r["via"]],
                                   f"{r['severity']} {r['summary'][:80]}", r["severity"],
                                   f"/verdicts/{r['id']}")
              for r in verdict["related"] if r["via"] in lanes]
    return charts.timeline("related alerts", verdict["created_at"], window_s,
                           list(lanes.values()), events)


def _swagger_ui_assets() -> Path:
    """The static folder of the swagger-ui-py package, found without importing it (its
    __init__ loads web-framework adapters the console does not need)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the console's /api/docs needs the swagger-ui-py package")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _entity(value: str | None) -> str | None:
    value = (value or "").strip()
    return value[:256] or None


def _wazuh_link(template: str | None, verdict: dict[str, Any]) -> str | None:
    """The alert's page in the Wazuh dashboard (console.wazuh_dashboard_url); values are
    URL-quoted, and only http(s) templates make a link."""
    if not template or not template.startswith(("https://", "http://")):
        return None
    from urllib.parse import quote

    return template.replace("{alert_id}", quote(str(verdict.get("alert_id") or ""), safe="")
                            ).replace("{agent}", quote(str(verdict.get("agent_name") or ""),
                                                       safe=""))


def _technique(technique_id: str) -> dict[str, Any]:
    technique_id = technique_id.strip().upper()
    found = attack_catalog.technique(technique_id)
    if found is None:
        raise invalid("attack", f"{technique_id} is not in the ATT&CK catalog")
    name, tactics = found
    return {"id": technique_id, "name": name, "tactics": list(tactics), "source": "analyst"}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _usage_charts(data: dict[str, Any]) -> dict[str, Any]:
    days = sorted({str(r["day"]) for r in data["daily"]})

    def total(key: str, by: str) -> list[tuple[str, float]]:
        sums: dict[str, float] = {}
        for r in data["daily"]:
            sums[str(r[by])] = sums.get(str(r[by]), 0.0) + float(r[key] or 0)
        return sorted(sums.items(), key=lambda kv: -kv[1])

    def per_day(key: str) -> list[float | None]:
        by_day: dict[str, list[float]] = {}
        for r in data["daily"]:
            if r[key] is not None:
                by_day.setdefault(str(r["day"]), []).append(float(r[key]))
        return [max(by_day[d]) if d in by_day else None for d in days]

    tokens_by_day = dict(total("tokens", "day"))
    return {
        "tokens_per_day": charts.bar_chart("tokens per day",
                                           [(d[5:], tokens_by_day.get(d, 0.0)) for d in days]),
        "cost_per_tenant": charts.bar_chart("estimated cost per tenant",
                                            total("cost", "tenant_id")),
        "cost_per_model": charts.bar_chart("estimated cost per model",
                                           total("cost", "model_name")),
        "ttft": charts.line_chart("TTFT p50 / p95 (ms)", [d[5:] for d in days],
                                  {"p50": per_day("ttft_p50_ms"),
                                   "p95": per_day("ttft_p95_ms")}),
        "rejections": charts.bar_chart("rejected requests by reason",
                                       [(str(r["reason"]), float(r["requests"]))
                                        for r in data["rejections"]]),
        "top_rules": charts.bar_chart("top rules by tokens",
                                      [(str(r["rule_id"]), float(r["tokens"]))
                                       for r in data["top_rules"]]),
    }
