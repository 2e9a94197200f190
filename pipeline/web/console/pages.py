"""How a console route answers: a page from its template (with the signed-in user and
their CSRF token), database rows as JSON, and a record's detail as its page shows it.

No `from __future__ import annotations` here, as in the routes."""

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime
from typing import Any, overload

from fastapi import Request
from fastapi.responses import HTMLResponse
from psycopg import AsyncConnection

from pipeline.store.audit import audit_entries
from pipeline.store.sessions import Session
from pipeline.store.tenant_scope import tenant_scope
from pipeline.web.console.deps import templates
from pipeline.web.console.errors import not_found
from pipeline.web.console.resources import ConsoleResources


def page(request: Request, name: str, signed: Session | None,
         **context: Any) -> HTMLResponse:
    """A console page: the template with the signed-in user and their CSRF token."""
    context.update(user=signed.user if signed else None,
                   csrf=signed.csrf_token if signed else "")
    return templates(request).TemplateResponse(request, name, context)


@overload
def jsonable(value: Mapping[str, Any]) -> dict[str, Any]: ...
@overload
def jsonable(value: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]: ...
def jsonable(value: Any) -> Any:
    # A JSON round trip keeps the shape (an object stays an object, a list a list) and
    # turns dates and bytes into strings: hence the overloads.
    return json.loads(json.dumps(value, default=_default))


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


@asynccontextmanager
async def audited_detail(
        res: ConsoleResources, signed: Session,
        load: Callable[[AsyncConnection], Awaitable[dict[str, Any] | None]], *,
        subject: str, audit_rows: int,
        ) -> AsyncIterator[tuple[AsyncConnection, dict[str, Any]]]:
    """A record's detail in the signed-in tenant's scope (404 when it is not there — or
    is another tenant's) with its audit trail (`subject`, e.g. "verdict:7"); the
    connection stays open for what else the page shows."""
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        found = await load(conn)
        if found is None:
            raise not_found()
        found["audit"] = await audit_entries(conn, audit_rows, subject)
        yield conn, found
