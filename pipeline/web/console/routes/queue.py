"""The verdict queue: filters (entity pivots, ATT&CK, time, full text), keyset pages and
the newest id the page polls for live updates.

No `from __future__ import annotations` here: FastAPI resolves the dependency aliases at
definition time."""

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse

from pipeline.store import queue as store
from pipeline.store.tenant_scope import tenant_scope
from pipeline.web.console.deps import Config, Resources, Signed
from pipeline.web.console.errors import invalid
from pipeline.web.console.pages import jsonable, page
from schemas.verdict import SEVERITIES

router = APIRouter()
_TECHNIQUE = re.compile(r"^T\d{4}(\.\d{3})?$")


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


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def queue_page(request: Request, res: Resources, cfg: Config, signed: Signed,
                     flt: Filter) -> Response:
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        result = await store.verdict_queue(conn, signed.user.tenant_id, flt, cfg.page_size)
        newest = await store.newest_id(conn)
    params = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
    return page(request, "queue.html", signed, page=result, params=params,
                severities=SEVERITIES, statuses=store.ANALYST_STATUSES, newest=newest,
                poll_ms=int(cfg.poll_interval_s * 1000))


@router.get("/api/verdicts", tags=["verdicts"])
async def api_queue(res: Resources, signed: Signed, flt: Filter,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> dict[str, Any]:
    """The tenant's verdicts, newest first, with filters; keyset pagination via
    `next_cursor`."""
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        result = await store.verdict_queue(conn, signed.user.tenant_id, flt, limit)
    return {"items": jsonable(result.rows), "next_cursor": result.next_cursor}


@router.get("/api/verdicts/newest", tags=["verdicts"])
async def api_newest(res: Resources, signed: Signed) -> dict[str, int]:
    """The id of the newest verdict (the queue page polls it for live updates)."""
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        return {"id": await store.newest_id(conn)}


def _when(param: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise invalid(param, "an ISO date or time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _entity(value: str | None) -> str | None:
    value = (value or "").strip()
    return value[:256] or None
