"""A tenant's admins: its console accounts, its gateway API keys and its audit log.

No `from __future__ import annotations` here: FastAPI resolves the dependency aliases at
definition time."""

import re
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from pipeline.store import apikeys, users
from pipeline.store.apikeys import ApiKey
from pipeline.store.audit import audit, audit_entries
from pipeline.store.sessions import Session
from pipeline.store.tenant_scope import tenant_scope
from pipeline.web.console.deps import Admin, AdminForm, AppSettings, Resources
from pipeline.web.console.errors import ConsoleError, invalid
from pipeline.web.console.pages import jsonable, page
from pipeline.web.console.security import hash_password

router = APIRouter()
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# ---- the audit log --------------------------------------------------------------------

@router.get("/audit", response_class=HTMLResponse, include_in_schema=False)
async def audit_page(request: Request, res: Resources, signed: Admin) -> Response:
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        entries = await audit_entries(conn, 200)
    return page(request, "audit.html", signed, entries=entries)


@router.get("/api/audit", tags=["audit"])
async def api_audit(res: Resources, signed: Admin) -> list[dict[str, Any]]:
    """The tenant's audit log, newest first (admins)."""
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        return jsonable(await audit_entries(conn, 200))


# ---- accounts of the tenant -----------------------------------------------------------

@router.get("/admin/users", response_class=HTMLResponse, include_in_schema=False)
async def users_page(request: Request, res: Resources, signed: Admin,
                     error: str | None = None) -> Response:
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        found = await users.tenant_users(conn)
    return page(request, "users.html", signed, users=found, error=error)


@router.get("/api/users", tags=["accounts"])
async def api_users(res: Resources, signed: Admin) -> list[dict[str, Any]]:
    """The tenant's console accounts (never their password hashes; admins)."""
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        return jsonable(await users.tenant_users(conn))


@router.post("/admin/users", include_in_schema=False)
async def users_create(res: Resources, signed: AdminForm, email: Annotated[str, Form()],
                       role: Annotated[str, Form()],
                       password: Annotated[str, Form()]) -> Response:
    if role not in ("analyst", "admin"):
        raise invalid("role", "analyst or admin")
    if not _EMAIL.match(email.strip()):
        raise invalid("email", "not an email address")
    try:
        password_hash = hash_password(password)
    except ValueError as exc:
        raise invalid("password", str(exc)) from exc
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        user_id = await users.add_tenant_user(conn, signed.user.tenant_id, email.strip(),
                                              role, password_hash)
        if user_id is not None:
            await audit(conn, signed.user, "user.create", f"user:{user_id}",
                        {"email": email.strip(), "role": role})
    if user_id is None:
        return RedirectResponse("/admin/users?error=taken", status_code=303)
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/users/{user_id}/disabled", include_in_schema=False)
async def users_disable(res: Resources, signed: AdminForm, user_id: int,
                        disabled: Annotated[bool, Form()]) -> Response:
    if user_id == signed.user.id:
        raise invalid("user", "you cannot disable your own account")
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        if not await users.set_user_disabled(conn, user_id, disabled):
            raise ConsoleError(404, "no such user")
        await audit(conn, signed.user, "user.disable" if disabled else "user.enable",
                    f"user:{user_id}")
    return RedirectResponse("/admin/users", status_code=303)


# ---- the tenant's gateway API keys ----------------------------------------------------

def _key_page(request: Request, signed: Session, keys: list[ApiKey],
              new_key: str | None = None) -> HTMLResponse:
    # Under the policies the listing is this tenant's only: newest first.
    keys = sorted(keys, key=lambda k: k.created_at, reverse=True)
    response = page(request, "apikeys.html", signed, keys=keys, new_key=new_key)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/admin/apikeys", response_class=HTMLResponse, include_in_schema=False)
async def keys_page(request: Request, res: Resources, signed: Admin) -> Response:
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        keys = await apikeys.list_keys(conn)
    return _key_page(request, signed, keys)


@router.post("/admin/apikeys", response_class=HTMLResponse, include_in_schema=False)
async def keys_create(request: Request, res: Resources, settings: AppSettings,
                      signed: AdminForm,
                      name: Annotated[str, Form(max_length=100)] = "") -> Response:
    pepper = apikeys.load_pepper(settings)
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        key_id, key = await apikeys.create_key(conn, pepper, signed.user.tenant_id,
                                               name.strip())
        await audit(conn, signed.user, "apikey.create", f"apikey:{key_id}",
                    {"name": name.strip()})
        keys = await apikeys.list_keys(conn)
    return _key_page(request, signed, keys, new_key=key)  # shown once, never stored


@router.post("/admin/apikeys/{key_id}/revoke", include_in_schema=False)
async def keys_revoke(res: Resources, signed: AdminForm, key_id: str) -> Response:
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        if not await apikeys.revoke_key(conn, key_id):
            raise ConsoleError(404, "no such active key")
        await audit(conn, signed.user, "apikey.revoke", f"apikey:{key_id}")
    return RedirectResponse("/admin/apikeys", status_code=303)
