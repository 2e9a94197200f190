"""LLM usage of the tenant (every tenant's for the platform's admins): tokens, estimated
cost, TTFT, rejections and top rules as a page, JSON and CSV. Read-only; analysts included.

No `from __future__ import annotations` here: FastAPI resolves the dependency aliases at
definition time."""

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import HTMLResponse

from pipeline.config import Settings
from pipeline.store.audit import audit
from pipeline.store.sessions import Session
from pipeline.store.tenant_scope import tenant_scope
from pipeline.store.usage_report import usage_overview
from pipeline.web.console import charts
from pipeline.web.console.deps import AppSettings, Resources, Signed
from pipeline.web.console.pages import jsonable, page
from pipeline.web.console.resources import ConsoleResources

router = APIRouter()
Days = Annotated[int, Query(ge=1, le=366)]


async def overview(res: ConsoleResources, settings: Settings, signed: Session,
                   days: int) -> dict[str, Any]:
    until = datetime.now(UTC)
    since = until - timedelta(days=days)
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        found = await usage_overview(
            conn, since=since, until=until, pricing=settings.usage.pricing,
            # only the platform's admins look across tenants; its analysts do not
            all_tenants=(signed.user.role == "admin"
                         and signed.user.tenant_id == settings.console.platform_tenant))
        await audit(conn, signed.user, "usage.view", None, {"days": days})
    return found


@router.get("/usage", response_class=HTMLResponse, include_in_schema=False)
async def usage_page(request: Request, res: Resources, settings: AppSettings,
                     signed: Signed, days: Days = 30) -> Response:
    data = await overview(res, settings, signed, days)
    return page(request, "usage.html", signed, days=days, data=data,
                charts=_usage_charts(data))


@router.get("/api/usage", tags=["usage"])
async def api_usage(res: Resources, settings: AppSettings, signed: Signed,
                    days: Days = 30) -> dict[str, Any]:
    """Tokens, estimated cost and TTFT per day/tenant/model, rejections by reason,
    top rules by tokens: the signed-in tenant's (every tenant's for the platform's
    admins). Read-only; analysts included."""
    return jsonable(await overview(res, settings, signed, days))


@router.get("/usage.csv", tags=["usage"])
async def usage_csv(res: Resources, settings: AppSettings, signed: Signed,
                    days: Days = 30) -> Response:
    data = await overview(res, settings, signed, days)
    out = io.StringIO()
    fields = ["day", "tenant_id", "model_name", "requests", "tokens", "cost",
              "ttft_p50_ms", "ttft_p95_ms"]
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(data["daily"])
    return Response(out.getvalue(), media_type="text/csv", headers={
        "Content-Disposition": 'attachment; filename="secanalyst-usage.csv"'})


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
