"""One verdict (its alert, passages, related alerts, audit trail), an analyst's feedback
on it, and the runbooks it cites.

No `from __future__ import annotations` here: FastAPI resolves the dependency aliases at
definition time."""

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from markupsafe import Markup
from pydantic import BaseModel, Field

from pipeline.analysis import attack as attack_catalog
from pipeline.config import ConsoleSettings
from pipeline.store import feedback, queue
from pipeline.store.sessions import Session
from pipeline.store.tenant_scope import tenant_scope
from pipeline.web.console import charts, render
from pipeline.web.console.deps import Config, Resources, Signed, SignedApi, SignedForm
from pipeline.web.console.errors import ConsoleError, invalid, not_found
from pipeline.web.console.pages import audited_detail, jsonable, page
from pipeline.web.console.resources import ConsoleResources
from schemas.verdict import SEVERITIES

router = APIRouter()
_LANES = (("agent", "agent"), ("src_ip", "source"), ("user", "user"))


class FeedbackBody(BaseModel):
    action: str = Field(pattern="^(confirm|severity|false_positive|attack|note)$")
    severity: str | None = None
    attack: list[str] | None = Field(default=None, max_length=16)
    note: str | None = Field(default=None, max_length=4000)


async def load_verdict(res: ConsoleResources, cfg: ConsoleSettings, signed: Session,
                       verdict_id: int) -> dict[str, Any]:
    async with audited_detail(res, signed, lambda conn: queue.verdict_detail(conn, verdict_id),
                              subject=f"verdict:{verdict_id}", audit_rows=20) as (conn, found):
        found["related"] = await queue.related_alerts(conn, verdict_id, cfg.related_window_s)
    return found


@router.get("/verdicts/{verdict_id}", response_class=HTMLResponse, include_in_schema=False)
async def verdict_page(request: Request, res: Resources, cfg: Config, signed: Signed,
                       verdict_id: int) -> Response:
    found = await load_verdict(res, cfg, signed, verdict_id)
    return page(request, "verdict.html", signed, v=found, severities=SEVERITIES,
                original=render.pretty_original(found.get("original")),
                pivots=render.entity_links(found.get("facts"), found.get("agent_name")),
                wazuh_url=wazuh_link(cfg.wazuh_dashboard_url, found),
                related_chart=_related_chart(found, cfg.related_window_s),
                window_min=round(cfg.related_window_s / 60))


@router.get("/runbooks/{slug}", response_class=HTMLResponse, include_in_schema=False)
async def runbook_page(request: Request, signed: Signed, slug: str) -> Response:
    found = render.render_runbook(slug)
    if found is None:
        raise not_found()
    title, html = found
    return page(request, "runbook.html", signed, slug=slug, title=title, html=html)


@router.get("/api/verdicts/{verdict_id}", tags=["verdicts"])
async def api_verdict(res: Resources, cfg: Config, signed: Signed,
                      verdict_id: int) -> dict[str, Any]:
    """One verdict with its raw alert, cited passages, feedback and audit trail."""
    return jsonable(await load_verdict(res, cfg, signed, verdict_id))


async def give_feedback(res: ConsoleResources, signed: Session, verdict_id: int,
                        body: FeedbackBody) -> None:
    if body.action == "severity" and body.severity not in SEVERITIES:
        raise invalid("severity", f"one of {', '.join(SEVERITIES)}")
    techniques = None
    if body.action == "attack":
        techniques = [_technique(t) for t in (body.attack or []) if t.strip()]
    async with tenant_scope(res.pool, signed.user.tenant_id) as conn:
        try:
            done = await feedback.apply_feedback(
                conn, signed.user, verdict_id, body.action, severity=body.severity,
                attack=techniques, note=(body.note or "").strip() or None)
        except feedback.FeedbackRejected as exc:
            raise ConsoleError(422, exc.message) from exc
    if not done:
        raise not_found()


@router.post("/verdicts/{verdict_id}/feedback", include_in_schema=False)
async def feedback_form(res: Resources, signed: SignedForm, verdict_id: int,
                        action: Annotated[str, Form()],
                        severity: Annotated[str | None, Form()] = None,
                        attack: Annotated[str | None, Form()] = None,
                        note: Annotated[str | None, Form()] = None) -> Response:
    try:
        body = FeedbackBody(action=action, severity=severity, note=note,
                            attack=None if attack is None
                            else [a.strip() for a in attack.split(",")])
    except ValueError as exc:
        raise invalid("action", "unknown feedback") from exc
    await give_feedback(res, signed, verdict_id, body)
    return RedirectResponse(f"/verdicts/{verdict_id}", status_code=303)


@router.post("/api/verdicts/{verdict_id}/feedback", tags=["verdicts"])
async def api_feedback(res: Resources, signed: SignedApi, verdict_id: int,
                       body: FeedbackBody) -> dict[str, bool]:
    """Confirm, change severity, mark false positive, replace the ATT&CK list or add a
    note. Needs the session's CSRF token in `X-CSRF-Token`."""
    await give_feedback(res, signed, verdict_id, body)
    return {"ok": True}


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


def wazuh_link(template: str | None, verdict: dict[str, Any]) -> str | None:
    """The alert's page in the Wazuh dashboard (console.wazuh_dashboard_url); values are
    URL-quoted, and only http(s) templates make a link."""
    if not template or not template.startswith(("https://", "http://")):
        return None
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
