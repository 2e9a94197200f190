"""Incidents: one row per incident key, with a workflow (assign, start, resolve; bulk).

No `from __future__ import annotations` here: FastAPI resolves the dependency aliases at
definition time."""

import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from pipeline.store import incidents
from pipeline.store.sessions import Session
from pipeline.store.tenant_scope import tenant_scope
from pipeline.web.console.deps import Config, Resources, Signed, SignedApi, SignedForm
from pipeline.web.console.errors import ConsoleError, invalid
from pipeline.web.console.pages import audited_detail, jsonable, page
from pipeline.web.console.resources import ConsoleResources

router = APIRouter()


class IncidentChange(BaseModel):
    action: str = Field(pattern="^(assign|start|resolve)$")
    ids: list[int] = Field(min_length=1, max_length=incidents.MAX_BULK)
    assignee: int | None = None
    resolution: str | None = None
    note: str | None = Field(default=None, max_length=4000)


def incident_filter(signed: Signed, status: str | None = None,
                    assignee: str | None = None) -> incidents.IncidentFilter:
    if status and status not in incidents.STATUSES:
        raise invalid("status", f"one of {', '.join(incidents.STATUSES)}")
    if assignee in (None, "", "any"):
        return incidents.IncidentFilter(status=status or None)
    if assignee == "none":
        return incidents.IncidentFilter(status=status or None, unassigned=True)
    if assignee == "me":
        return incidents.IncidentFilter(status=status or None, assignee_id=signed.user.id)
    if not assignee.isdigit():
        raise invalid("assignee", "me, none or an account id")
    return incidents.IncidentFilter(status=status or None, assignee_id=int(assignee))


IncidentFlt = Annotated[incidents.IncidentFilter, Depends(incident_filter)]


@router.get("/incidents", response_class=HTMLResponse, include_in_schema=False)
async def incidents_page(request: Request, res: Resources, cfg: Config, signed: Signed,
                         flt: IncidentFlt, error: str | None = None) -> Response:
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        rows = await incidents.incident_queue(conn, flt, cfg.page_size)
        people = await incidents.tenant_analysts(conn)
    params = {k: v for k, v in request.query_params.items() if v and k != "error"}
    return page(request, "incidents.html", signed, rows=rows, people=people,
                params=params, statuses=incidents.STATUSES,
                resolutions=incidents.RESOLUTIONS, error=error)


@router.get("/api/incidents", tags=["incidents"])
async def api_incidents(res: Resources, signed: Signed, flt: IncidentFlt,
                        limit: Annotated[int, Query(ge=1, le=500)] = 50
                        ) -> list[dict[str, Any]]:
    """The tenant's incidents (verdicts sharing an incident key), most recently seen
    first; `assignee=me|none|<id>`, `status=new|in_progress|resolved`."""
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        return jsonable(await incidents.incident_queue(conn, flt, limit))


async def load_incident(res: ConsoleResources, signed: Session,
                        incident_id: int) -> dict[str, Any]:
    async with audited_detail(res, signed,
                              lambda conn: incidents.incident_detail(conn, incident_id),
                              subject=f"incident:{incident_id}", audit_rows=50) as (conn, found):
        found["people"] = await incidents.tenant_analysts(conn)
    return found


@router.get("/incidents/{incident_id}", response_class=HTMLResponse,
            include_in_schema=False)
async def incident_page(request: Request, res: Resources, signed: Signed,
                        incident_id: int) -> Response:
    found = await load_incident(res, signed, incident_id)
    return page(request, "incident.html", signed, i=found,
                resolutions=incidents.RESOLUTIONS)


@router.get("/api/incidents/{incident_id}", tags=["incidents"])
async def api_incident(res: Resources, signed: Signed, incident_id: int) -> dict[str, Any]:
    """One incident with its newest alerts' verdicts and its audit trail."""
    return jsonable(await load_incident(res, signed, incident_id))


async def change_incidents(res: ConsoleResources, signed: Session,
                           body: IncidentChange) -> int:
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        try:
            if body.action == "assign":
                return await incidents.assign(conn, signed.user, body.ids, body.assignee)
            return await incidents.set_status(
                conn, signed.user, body.ids,
                "resolved" if body.action == "resolve" else "in_progress",
                body.resolution, (body.note or "").strip() or None)
        except incidents.IncidentRejected as exc:
            raise ConsoleError(422, str(exc)) from exc


@router.post("/incidents/change", include_in_schema=False)
async def incidents_form(res: Resources, signed: SignedForm,
                         action: Annotated[str, Form()],
                         ids: Annotated[list[int], Form()],
                         back: Annotated[str, Form()] = "/incidents",
                         assignee: Annotated[str | None, Form()] = None,
                         resolution: Annotated[str | None, Form()] = None,
                         note: Annotated[str | None, Form()] = None) -> Response:
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


@router.post("/api/incidents/change", tags=["incidents"])
async def api_incidents_change(res: Resources, signed: SignedApi,
                               body: IncidentChange) -> dict[str, int]:
    """Assign (`assignee`: an account id, null to unassign), start, or resolve (with
    `resolution` and a `note`) up to 200 incidents at once; every change audited.
    Needs the session's CSRF token in `X-CSRF-Token`."""
    return {"changed": await change_incidents(res, signed, body)}
