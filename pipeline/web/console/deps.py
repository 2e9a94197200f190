"""What every console route may ask for, as FastAPI dependencies: the settings, the
templates, the open resources (the pool), the signed-in session (an admin's, for admin
pages) and a checked CSRF token (a form field, or the X-CSRF-Token header of /api/).

`create_console_app` puts the settings and templates on `app.state`; the lifespan puts
the resources there.

No `from __future__ import annotations` here: FastAPI resolves the dependency aliases at
definition time."""

from typing import Annotated

from fastapi import Depends, Form, Header, Request
from fastapi.templating import Jinja2Templates

from pipeline.config import ConsoleSettings, Settings
from pipeline.store.sessions import Session, find_session
from pipeline.web.app_state import opened
from pipeline.web.console.errors import NotSignedIn, bad_csrf, forbidden
from pipeline.web.console.resources import ConsoleResources
from pipeline.web.console.security import SESSION_COOKIE, same_token


def app_settings(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


def console_settings(request: Request) -> ConsoleSettings:
    return app_settings(request).console


def templates(request: Request) -> Jinja2Templates:
    found: Jinja2Templates = request.app.state.templates
    return found


def resources(request: Request) -> ConsoleResources:
    found: ConsoleResources = opened(request, "resources")
    return found


AppSettings = Annotated[Settings, Depends(app_settings)]
Config = Annotated[ConsoleSettings, Depends(console_settings)]
Templates = Annotated[Jinja2Templates, Depends(templates)]
Resources = Annotated[ConsoleResources, Depends(resources)]


async def session(request: Request, res: Resources) -> Session:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise NotSignedIn()
    async with res.pool.connection() as conn:
        found = await find_session(conn, token)
    if found is None:
        raise NotSignedIn()
    return found


Signed = Annotated[Session, Depends(session)]


async def admin(signed: Signed) -> Session:
    if signed.user.role != "admin":
        raise forbidden()
    return signed


Admin = Annotated[Session, Depends(admin)]


async def form_csrf(signed: Signed, csrf_token: Annotated[str, Form()]) -> Session:
    """The session, once the form's CSRF token is the session's."""
    if not same_token(signed.csrf_token, csrf_token):
        raise bad_csrf()
    return signed


async def admin_form_csrf(signed: Admin, csrf_token: Annotated[str, Form()]) -> Session:
    return await form_csrf(signed, csrf_token)


async def header_csrf(signed: Signed,
                      x_csrf_token: Annotated[str | None, Header()] = None) -> Session:
    """The session, once the X-CSRF-Token header is the session's token (/api/ POSTs)."""
    if not same_token(signed.csrf_token, x_csrf_token):
        raise bad_csrf()
    return signed


SignedForm = Annotated[Session, Depends(form_csrf)]
AdminForm = Annotated[Session, Depends(admin_form_csrf)]
SignedApi = Annotated[Session, Depends(header_csrf)]
