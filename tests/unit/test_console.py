"""Console pieces that need no database: passwords, CSRF comparison, SVG charts, the
queue's SQL and cursors, template escaping, and the app's refusals before any query."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from starlette.requests import Request

from pipeline.config import Settings
from pipeline.store.queue import QueueFilter, decode_cursor, encode_cursor, queue_sql
from pipeline.web.console import charts
from pipeline.web.console.app import create_console_app, make_templates
from pipeline.web.console.resources import ConsoleResources
from pipeline.web.console.security import (
    hash_password,
    same_token,
    verify_password,
)

HOSTILE = '<script>alert(1)</script> [x](javascript:alert(2)) <img src=x onerror=y>'


def test_passwords_are_argon2id_and_verified() -> None:
    stored = hash_password("a long enough password")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "a long enough password")
    assert not verify_password(stored, "a long enough passwort")
    assert not verify_password(None, "a long enough password")  # unknown user
    assert not verify_password("not a hash", "whatever")
    with pytest.raises(ValueError, match="12 characters"):
        hash_password("short")


def test_csrf_tokens_compare_exactly() -> None:
    assert same_token("abc", "abc")
    assert not same_token("abc", "abd")
    assert not same_token("", "")
    assert not same_token(None, "abc")


def test_cursor_round_trip_and_rejects_garbage() -> None:
    when = datetime(2026, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
    assert decode_cursor(encode_cursor(when, 42)) == (when, 42)
    for bad in ("", "x", "20260501T123015.123456_x", "yesterday_3"):
        with pytest.raises(ValueError):
            decode_cursor(bad)


def test_queue_sql_is_parameterised_and_keyset_ordered() -> None:
    flt = QueueFilter(severity="high", rule="5710'; DROP TABLE verdicts; --",
                      technique="T1110", search="ssh", agent="web",
                      after=(datetime(2026, 1, 1, tzinfo=UTC), 7))
    sql, params = queue_sql("acme", flt, 51)
    assert "DROP" not in sql and params["rule"].startswith("5710'")
    assert "(v.created_at, v.id) < (%(after_ts)s, %(after_id)s)" in sql
    assert sql.rstrip().endswith("ORDER BY v.created_at DESC, v.id DESC LIMIT %(limit)s")
    assert params["tenant"] == "acme" and params["limit"] == 51


def test_charts_escape_labels_and_scale() -> None:
    svg = str(charts.bar_chart("t<x>", [(HOSTILE, 10.0), ("b", 5.0)]))
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    heights = [float(h) for h in re.findall(r'class="bar"[^>]* height="([\d.]+)"', svg)]
    assert heights[0] == pytest.approx(2 * heights[1])
    line = str(charts.line_chart("ttft", ["a", "b", "c"], {"p50": [1.0, None, 3.0]}))
    assert line.count("<circle") == 2 and "<polyline" in line
    assert "<svg" in str(charts.bar_chart("empty", []))


def test_templates_escape_a_hostile_verdict() -> None:
    templates = make_templates()
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": [],
                       "query_string": b"", "app": None})
    verdict = {
        "id": 1, "alert_id": HOSTILE, "rule_id": "1", "rule_level": 3, "severity": "low",
        "severity_source": HOSTILE, "status": "explained", "review_reason": None,
        "analyst_status": "new", "seen_count": 2, "reused_from": None, "last_seen_at": None,
        "agent_name": HOSTILE, "created_at": datetime.now(UTC), "model_name": "m",
        "prompt_version": "v", "input_tokens": 1, "output_tokens": 1, "latency_ms": 1,
        "confidence": None, "summary": HOSTILE, "next_steps": [HOSTILE],
        "attack": [{"id": "T1110", "name": HOSTILE, "tactics": [HOSTILE],
                    "source": "model"}],
        "passages": [{"chunk_id": "c", "runbook": "r", "title": HOSTILE, "heading": "h",
                      "content": HOSTILE}],
        "similar": [], "feedback": [], "audit": [], "alert": {"data": HOSTILE},
        "provenance": {"note": HOSTILE},
    }
    html = templates.get_template("verdict.html").render(
        request=request, v=verdict, severities=["low"], user=None, csrf="")
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "javascript:alert(2)" in html and 'href="javascript' not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 7


class _NoPool:
    def connection(self) -> None:
        raise AssertionError("the request should have been refused before any query")


@asynccontextmanager
async def _no_database(_: Settings) -> AsyncIterator[ConsoleResources]:
    yield ConsoleResources(pool=_NoPool())  # type: ignore[arg-type]


@pytest.fixture
def client() -> TestClient:
    app = create_console_app(Settings(), open_resources=_no_database)
    return TestClient(app, base_url="https://testserver", follow_redirects=False)


def test_pages_redirect_and_api_refuses_without_a_session(client: TestClient) -> None:
    with client:
        assert client.get("/").headers["location"] == "/login"
        answer = client.get("/api/verdicts")
        assert answer.status_code == 401
        assert answer.json() == {"error": {"message": "sign in first"}}
        assert client.post("/api/verdicts/1/feedback",
                           json={"action": "confirm"}).status_code == 401


def test_login_form_sets_a_csrf_cookie_and_checks_it(client: TestClient) -> None:
    with client:
        form = client.get("/login")
        assert form.status_code == 200
        assert "frame-ancestors 'none'" in form.headers["content-security-policy"]
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None and client.cookies.get("sa_login_csrf") == token.group(1)
        refused = client.post("/login", data={"email": "a@b.c", "password": "x",
                                              "csrf_token": "forged"})
        assert refused.status_code == 403
        assert "expired" in refused.text


def test_openapi_documents_the_json_api(client: TestClient) -> None:
    with client:
        paths = client.get("/api/openapi.json").json()["paths"]
    assert {"/api/verdicts", "/api/verdicts/{verdict_id}",
            "/api/verdicts/{verdict_id}/feedback", "/api/usage", "/api/audit"} <= set(paths)


def test_attack_and_runbook_links() -> None:
    from pipeline.web.console.render import attack_url, runbook_link

    assert attack_url("T1110") == "https://attack.mitre.org/techniques/T1110/"
    assert attack_url("t1110.001") == "https://attack.mitre.org/techniques/T1110/001/"
    assert attack_url("T1110/../x") is None and attack_url("") is None
    assert runbook_link("ssh-brute-force#triage") == "/runbooks/ssh-brute-force#triage"
    assert runbook_link("../etc#x") is None and runbook_link("javascript:x#y") is None


def test_original_alert_is_pretty_and_keeps_what_json_cannot_show() -> None:
    from pipeline.web.console.render import pretty_original

    assert pretty_original('{"b": "<x>", "a": "é"}') == '{\n  "b": "<x>",\n  "a": "é"\n}'
    assert pretty_original('{"s": "\\ud800"}') == '{\n  "s": "\\ud800"\n}'
    assert pretty_original("not json <b>") == "not json <b>" and pretty_original(None) is None


def test_wazuh_link_quotes_values_and_needs_http() -> None:
    from pipeline.web.console.routes.verdicts import wazuh_link as _wazuh_link

    verdict = {"alert_id": "1.2&x=<y>", "agent_name": "web 01"}
    assert _wazuh_link("https://w.example/a?id={alert_id}&agent={agent}", verdict) == (
        "https://w.example/a?id=1.2%26x%3D%3Cy%3E&agent=web%2001")
    assert _wazuh_link("javascript:alert({alert_id})", verdict) is None
    assert _wazuh_link(None, verdict) is None


def test_timeline_places_events_by_time_and_escapes_labels() -> None:
    from datetime import timedelta

    centre = datetime(2026, 12, 1, 12, tzinfo=UTC)
    events = [charts.TimelineEvent(centre - timedelta(minutes=30), "agent a", HOSTILE,
                                   "high", "/verdicts/1"),
              charts.TimelineEvent(centre + timedelta(minutes=60), "user <u>", "x",
                                   "critical", "/verdicts/2"),
              charts.TimelineEvent(centre, "not a lane", "x", "low", "/verdicts/3")]
    svg = str(charts.timeline("t", centre, 3600, ["agent a", "user <u>"], events))
    assert svg.count('<a class="event"') == 2 and "/verdicts/3" not in svg
    assert "<script" not in svg and "&lt;script&gt;" in svg and "user &lt;u&gt;" in svg
    xs = [float(x) for x in re.findall(r'<circle cx="([\d.]+)"', svg)]
    assert xs[0] < xs[1]  # earlier is further left; +60 min is the right edge
