"""Password sign-in and sign-out (OIDC sign-in: pipeline/web/console/oidc.py).

No `from __future__ import annotations` here: FastAPI resolves the dependency aliases at
definition time."""

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from pipeline.store import audit, sessions, users
from pipeline.store.tenant_scope import tenant_scope
from pipeline.web.console.deps import Config, Resources, SignedForm, Templates
from pipeline.web.console.errors import bad_csrf
from pipeline.web.console.security import (
    LOGIN_CSRF_COOKIE,
    SESSION_COOKIE,
    new_csrf_token,
    same_token,
    verify_password,
)

router = APIRouter(include_in_schema=False)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, cfg: Config, templates: Templates,
                     error: str | None = None) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or new_csrf_token()
    response = templates.TemplateResponse(
        request, "login.html", {"user": None, "csrf": token, "error": error,
                                "oidc": cfg.oidc.provider_name if cfg.oidc else None})
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=cfg.cookie_secure, path="/login")
    return response


@router.post("/login")
async def login(request: Request, res: Resources, cfg: Config,
                email: Annotated[str, Form()], password: Annotated[str, Form()],
                csrf_token: Annotated[str, Form()]) -> Response:
    if not same_token(request.cookies.get(LOGIN_CSRF_COOKIE), csrf_token):
        raise bad_csrf()
    async with res.pool.connection() as conn:
        user = await users.find_user(conn, email.strip())
        throttled = user is not None and await audit.recent_failed_sign_ins(
            conn, user.id, cfg.failed_sign_in_window_s) >= cfg.max_failed_sign_ins
        ok = verify_password(user.password_hash if user else None, password)
        if user is None or not ok or throttled:
            if user is not None:
                async with tenant_scope(res.pool, user.tenant_id) as scoped:
                    await audit.audit(scoped, user, "auth.sign_in_failed", None)
            return RedirectResponse("/login?error=1", status_code=303)
        token, _ = await sessions.create_session(conn, user.id, cfg.session_ttl_s)
        await conn.commit()
    async with tenant_scope(res.pool, user.tenant_id) as scoped:
        await audit.audit(scoped, user, "auth.sign_in", None)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                        secure=cfg.cookie_secure, max_age=int(cfg.session_ttl_s))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request, res: Resources, signed: SignedForm) -> Response:
    async with res.pool.connection() as conn:
        await sessions.delete_session(conn, request.cookies.get(SESSION_COOKIE, ""))
        await conn.commit()
    async with tenant_scope(res.pool, signed.user.tenant_id) as scoped:
        await audit.audit(scoped, signed.user, "auth.sign_out", None)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.get("/api/docs", response_class=HTMLResponse)
async def api_docs(request: Request, templates: Templates) -> Response:
    return templates.TemplateResponse(request, "api_docs.html", {})


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
