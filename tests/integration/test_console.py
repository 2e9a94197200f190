"""The review console against a real PostgreSQL of its own: sign-in, CSRF, tenant
isolation (UI, API, guessed ids, and in the database itself), feedback, escaping, the
queue's filters and keyset pages, usage for admins."""

from __future__ import annotations

import re
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from pipeline.web.console.app import create_console_app
from tests.e2e.console_seed import PASSWORD, Seeded, console_database

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    with console_database() as found:
        yield found


@pytest.fixture(scope="module")
def app_client(seeded: Seeded) -> Iterator[TestClient]:
    with TestClient(create_console_app(seeded.settings), base_url="https://testserver",
                    follow_redirects=False) as client:
        yield client


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> str:
    """Sign in on a fresh cookie jar; return the session's CSRF token."""
    client.cookies.clear()
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    answer = client.post("/login", data={"email": email, "password": password,
                                         "csrf_token": token.group(1)})
    assert answer.status_code == 303
    if answer.headers["location"] != "/":
        return ""
    page = client.get("/")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    return csrf.group(1)


def verdict_row(seeded: Seeded, verdict_id: int) -> tuple[str, str, str]:
    with psycopg.connect(seeded.url) as conn:
        row = conn.execute("SELECT severity, analyst_status, severity_source FROM verdicts "
                           "WHERE id = %s", (verdict_id,)).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def test_sign_in_sets_a_locked_down_session_cookie(app_client: TestClient) -> None:
    assert app_client.get("/").status_code == 303  # not signed in → /login
    assert sign_in(app_client, "analyst@acme.test", "wrong password!!") == ""
    app_client.cookies.clear()
    form = app_client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    answer = app_client.post("/login", data={"email": "analyst@acme.test",
                                             "password": PASSWORD,
                                             "csrf_token": token.group(1)})
    cookie = answer.headers["set-cookie"].lower()
    assert "sa_session=" in cookie and "httponly" in cookie and "secure" in cookie
    assert "samesite=lax" in cookie
    assert "default-src 'self'" in answer.headers["content-security-policy"]


def test_login_without_csrf_token_is_refused(app_client: TestClient) -> None:
    app_client.cookies.clear()
    app_client.get("/login")
    answer = app_client.post("/login", data={"email": "analyst@acme.test",
                                             "password": PASSWORD, "csrf_token": "forged"})
    assert answer.status_code == 403


def test_queue_shows_only_own_tenant(app_client: TestClient, seeded: Seeded) -> None:
    sign_in(app_client, "analyst@acme.test")
    items = app_client.get("/api/verdicts", params={"limit": 100}).json()["items"]
    assert [i["id"] for i in items] == seeded.ids["acme"]
    page = app_client.get("/").text
    assert "acme sshd" in page and "globex" not in page


def test_other_tenants_verdicts_cannot_be_read_or_changed(app_client: TestClient,
                                                          seeded: Seeded) -> None:
    csrf = sign_in(app_client, "admin@acme.test")
    foreign = seeded.ids["globex"][0]
    before = verdict_row(seeded, foreign)
    assert app_client.get(f"/verdicts/{foreign}").status_code == 404
    assert app_client.get(f"/api/verdicts/{foreign}").status_code == 404
    answer = app_client.post(f"/verdicts/{foreign}/feedback",
                             data={"action": "severity", "severity": "info",
                                   "csrf_token": csrf})
    assert answer.status_code == 404
    answer = app_client.post(f"/api/verdicts/{foreign}/feedback",
                             json={"action": "false_positive"},
                             headers={"X-CSRF-Token": csrf})
    assert answer.status_code == 404
    assert verdict_row(seeded, foreign) == before
    # guessing: every id in a range around the tenant's own
    visible = {i for i in range(1, 40)
               if app_client.get(f"/api/verdicts/{i}").status_code == 200}
    assert visible == set(seeded.ids["acme"])
    assert all(i["tenant_id"] == "acme" for i in app_client.get(
        "/api/verdicts", params={"q": "globex", "limit": 100}).json()["items"])


def test_row_level_security_holds_in_the_database(seeded: Seeded) -> None:
    with psycopg.connect(seeded.url) as conn:
        conn.execute("SET ROLE secanalyst_console")
        assert conn.execute("SELECT count(*) FROM verdicts").fetchone() == (0,)  # unset
        conn.execute("SELECT set_config('app.tenant_id', 'acme', false)")
        tenants = conn.execute("SELECT DISTINCT tenant_id FROM verdicts").fetchall()
        assert tenants == [("acme",)]
        cur = conn.execute("UPDATE verdicts SET severity = 'info' WHERE tenant_id = 'globex'")
        assert cur.rowcount == 0
        assert conn.execute("SELECT count(*) FROM llm_usage_events "
                            "WHERE tenant_id = 'globex'").fetchone() == (0,)
        ids = conn.execute("SELECT console_queue_ids('{\"search\": \"sshd\"}', NULL, NULL, "
                           "100)").fetchall()
        assert sorted(i for (i,) in ids) == sorted(seeded.ids["acme"][1:])  # not globex
        conn.execute("RESET app.tenant_id")
        assert conn.execute("SELECT count(*) FROM console_queue_ids('{}', NULL, NULL, 100)"
                            ).fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM verdicts")
        conn.rollback()


def test_severity_correction_is_stored_with_who_and_audited(app_client: TestClient,
                                                            seeded: Seeded) -> None:
    csrf = sign_in(app_client, "analyst@acme.test")
    target = seeded.xss_id  # not one the filter tests count
    forged = app_client.post(f"/verdicts/{target}/feedback",
                             data={"action": "severity", "severity": "critical",
                                   "csrf_token": "nope"})
    assert forged.status_code == 403
    assert app_client.post(f"/api/verdicts/{target}/feedback",
                           json={"action": "confirm"}).status_code == 403  # no header
    answer = app_client.post(f"/verdicts/{target}/feedback",
                             data={"action": "severity", "severity": "critical",
                                   "csrf_token": csrf})
    assert answer.status_code == 303
    assert verdict_row(seeded, target) == ("critical", "corrected", "analyst")
    detail = app_client.get(f"/api/verdicts/{target}").json()
    assert detail["feedback"][0]["user_email"] == "analyst@acme.test"
    assert detail["feedback"][0]["new_value"] == "critical"
    assert detail["audit"][0]["action"] == "verdict.severity"
    assert app_client.post(f"/api/verdicts/{target}/feedback",
                           json={"action": "attack", "attack": ["T9999"]},
                           headers={"X-CSRF-Token": csrf}).status_code == 422
    assert app_client.post(f"/api/verdicts/{target}/feedback",
                           json={"action": "attack", "attack": ["t1110.001"]},
                           headers={"X-CSRF-Token": csrf}).status_code == 200
    attack = app_client.get(f"/api/verdicts/{target}").json()["attack"]
    assert attack[0]["id"] == "T1110.001" and attack[0]["source"] == "analyst"
    assert attack[0]["name"] and attack[0]["tactics"]
    assert app_client.post(f"/api/verdicts/{target}/feedback",
                           json={"action": "false_positive"},
                           headers={"X-CSRF-Token": csrf}).status_code == 200
    assert verdict_row(seeded, target)[1] == "false_positive"


def test_hostile_alert_renders_as_inert_text(app_client: TestClient, seeded: Seeded) -> None:
    sign_in(app_client, "analyst@acme.test")
    page = app_client.get(f"/verdicts/{seeded.xss_id}").text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "<iframe" not in page and 'href="javascript:' not in page
    assert "&lt;script&gt;alert(&#34;xss&#34;)&lt;/script&gt;" in page
    assert "[phish](http://evil.test)" in page  # markdown is not rendered either
    assert "<script>alert" not in app_client.get("/").text


@pytest.mark.parametrize(("params", "expected"), [
    ({"severity": "high"}, lambda n: n in (0, 5)),
    ({"rule": "550"}, lambda n: n % 2 == 1),
    ({"agent": "db-01"}, lambda n: n >= 4),
    ({"technique": "T1110"}, lambda n: n % 2 == 0),
    ({"q": "number 3"}, lambda n: n == 3),
])
def test_queue_filters(app_client: TestClient, seeded: Seeded, params: dict[str, str],
                       expected: object) -> None:
    sign_in(app_client, "analyst@acme.test")
    items = app_client.get("/api/verdicts", params={**params, "limit": 100}).json()["items"]
    numbers = {int(i["alert_id"].rsplit("-", 1)[1]) for i in items}
    assert numbers == {n for n in range(7) if expected(n)}  # type: ignore[operator]


def test_keyset_pages_cover_the_queue_once(app_client: TestClient, seeded: Seeded) -> None:
    sign_in(app_client, "analyst@acme.test")
    seen: list[int] = []
    cursor: str | None = None
    for _ in range(10):
        body = app_client.get("/api/verdicts", params={"limit": 3, **(
            {"cursor": cursor} if cursor else {})}).json()
        seen += [i["id"] for i in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == seeded.ids["acme"]
    assert app_client.get("/api/verdicts", params={"cursor": "x"}).status_code == 422
    assert "Older" in app_client.get("/").text  # page size 3 < 8 verdicts


def test_usage_is_for_admins_with_charts_and_csv(app_client: TestClient) -> None:
    sign_in(app_client, "analyst@acme.test")
    assert app_client.get("/usage").status_code == 403
    assert app_client.get("/api/usage").status_code == 403
    sign_in(app_client, "admin@acme.test")
    page = app_client.get("/usage")
    assert page.status_code == 200 and page.text.count("<svg") == 6
    data = app_client.get("/api/usage").json()
    assert {r["tenant_id"] for r in data["daily"]} == {"acme"}
    assert data["rejections"][0]["reason"] == "quota_exceeded"
    assert {r["rule_id"] for r in data["top_rules"]} >= {"5710", "550"}
    csv_text = app_client.get("/usage.csv").text
    assert csv_text.startswith("day,tenant_id,model_name") and "acme" in csv_text
    actions = [a["action"] for a in app_client.get("/api/audit").json()]
    assert "usage.view" in actions and "auth.sign_in" in actions
