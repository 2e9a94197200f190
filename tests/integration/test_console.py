"""The review console against a real PostgreSQL of its own: sign-in, CSRF, tenant
isolation (UI, API, guessed ids, and in the database itself), feedback, escaping, the
queue's filters and keyset pages, usage for admins."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator

import psycopg
import pytest
from fastapi.testclient import TestClient

from pipeline.cli.console import add_user
from pipeline.web.console.app import create_console_app
from tests.e2e.console_seed import CHUNK, PASSWORD, Seeded, console_database, insert_storm

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


def test_verdict_page_shows_passages_and_judged_similar_alerts(app_client: TestClient,
                                                               seeded: Seeded) -> None:
    sign_in(app_client, "analyst@acme.test")
    detail = app_client.get(f"/api/verdicts/{seeded.ids['acme'][1]}").json()  # acme-6
    assert [p["chunk_id"] for p in detail["passages"]] == [CHUNK]
    assert [s["alert_id"] for s in detail["similar"]] == ["acme-5"]
    page = app_client.get(f"/verdicts/{seeded.ids['acme'][1]}").text
    assert "Block the source address &lt;at the firewall&gt;." in page
    assert "judged: " in page and "seen 1 time(s)" in page


@pytest.mark.parametrize(("params", "expected"), [
    ({"severity": "high"}, lambda n: n in (0, 5)),
    ({"rule": "550"}, lambda n: n % 2 == 1),
    ({"agent": "db-01"}, lambda n: n >= 4),
    ({"technique": "T1110"}, lambda n: n % 2 == 0),
    ({"q": "number 3"}, lambda n: n == 3),
    ({"src_ip": "10.0.0.2"}, lambda n: n % 2 == 0),  # pivots on the verdict's facts
    ({"user": "admin"}, lambda n: n % 2 == 1),
    ({"src_ip": "10.0.0.1", "severity": "low"}, lambda n: n == 1),
    ({"dst_ip": "10.9.9.9"}, lambda n: False),
    ({"host": "db-01"}, lambda n: n >= 4),  # the agent in the facts (migration 0011)
])
def test_queue_filters(app_client: TestClient, seeded: Seeded, params: dict[str, str],
                       expected: object) -> None:
    sign_in(app_client, "analyst@acme.test")
    items = app_client.get("/api/verdicts", params={**params, "limit": 100}).json()["items"]
    numbers = {int(i["alert_id"].rsplit("-", 1)[1]) for i in items}
    assert numbers == {n for n in range(7) if expected(n)}  # type: ignore[operator]


def test_verdict_page_header_links_and_original_alert(app_client: TestClient,
                                                     seeded: Seeded) -> None:
    sign_in(app_client, "analyst@acme.test")
    page = app_client.get(f"/verdicts/{seeded.ids['acme'][1]}").text  # acme-6
    title = re.search(r"<title>(.*?)</title>", page)
    assert title and title.group(1).startswith("sshd: Attempt to login using a non-existent")
    assert 'href="/?src_ip=10.0.0.2"' in page and 'href="/?user=root"' in page
    assert 'href="/?host=db-01"' in page and "port 22" in page
    assert 'href="https://attack.mitre.org/techniques/T1110/"' in page
    assert "tactic <em>Credential Access</em>" in page
    assert 'href="/runbooks/ssh-brute-force#containment-and-response"' in page
    assert ('href="https://wazuh.example/app/threat-hunting#/overview/?_q=id:acme-6"'
            in page)
    assert '"description": "sshd acme 6"' in page.replace("&#34;", '"')

    hostile = app_client.get(f"/verdicts/{seeded.xss_id}").text
    original = hostile.split('id="original-alert">', 1)[1].split("</pre>", 1)[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in original and "<script" not in original


def test_runbook_page_renders_markdown_without_raw_html(app_client: TestClient) -> None:
    sign_in(app_client, "analyst@acme.test")
    page = app_client.get("/runbooks/ssh-brute-force")
    assert page.status_code == 200
    assert '<h2 id="containment-and-response">' in page.text
    assert "<title>SSH brute force against Linux hosts" in page.text
    for bad in ("../README", "no-such-runbook", "ssh-brute-force.md", "UPPER"):
        assert app_client.get(f"/runbooks/{bad}").status_code == 404


def test_runbook_markdown_is_escaped(tmp_path: object) -> None:
    from pathlib import Path

    from pipeline.web.console.render import render_runbook

    folder = Path(str(tmp_path))
    (folder / "evil.md").write_text(
        "---\ntitle: <b>x</b>\n---\n## Steps\n<script>alert(1)</script>\n"
        "[go](javascript:alert(2)) <img src=x onerror=alert(3)>\n")
    found = render_runbook("evil", folder)
    assert found is not None
    html = str(found[1])
    assert "<script" not in html and "<img" not in html and 'href="javascript:' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_api_docs_are_served_by_the_console(app_client: TestClient) -> None:
    page = app_client.get("/api/docs")
    assert page.status_code == 200
    assert 'src="/static/swagger-ui/swagger-ui-bundle.js"' in page.text
    assert "cdn" not in page.text.lower() and "<script>" not in page.text
    bundle = app_client.get("/static/swagger-ui/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and "SwaggerUIBundle" in bundle.text
    assert app_client.get("/static/swagger-ui/swagger-ui.css").status_code == 200
    assert "/api/verdicts" in app_client.get("/api/openapi.json").json()["paths"]


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


def test_analysts_see_their_own_tenants_usage_read_only(app_client: TestClient,
                                                        seeded: Seeded) -> None:
    sign_in(app_client, "analyst@globex.test")
    page = app_client.get("/usage")
    assert page.status_code == 200 and page.text.count("<svg") == 6
    table = page.text.split('id="usage-table"', 1)[1]
    assert "globex" in table and "acme" not in table
    assert {r["tenant_id"] for r in app_client.get("/api/usage").json()["daily"]} == {
        "globex"}
    assert "acme" not in app_client.get("/usage.csv").text
    assert app_client.get("/audit").status_code == 403  # the audit log stays for admins
    assert app_client.get("/api/audit").status_code == 403
    # an analyst of the platform tenant does not get the platform admins' view
    add_user(seeded.settings, "platform", "analyst@platform.test", "analyst", PASSWORD)
    sign_in(app_client, "analyst@platform.test")
    assert app_client.get("/api/usage").json()["daily"] == []


def test_usage_for_admins_with_charts_and_csv(app_client: TestClient) -> None:
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
    sign_in(app_client, "admin@platform.test")  # the platform team sees every tenant
    data = app_client.get("/api/usage").json()
    assert {r["tenant_id"] for r in data["daily"]} == {"acme", "globex"}
    assert app_client.get("/api/verdicts").json()["items"] == []  # but no verdicts


def test_sign_out_ends_the_session(app_client: TestClient) -> None:
    csrf = sign_in(app_client, "analyst@acme.test")
    token = app_client.cookies.get("sa_session")
    assert app_client.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    assert app_client.post("/logout", data={"csrf_token": csrf}).status_code == 303
    app_client.cookies.set("sa_session", token or "", domain="testserver")  # replay
    assert app_client.get("/api/verdicts").status_code == 401


def test_repeated_failures_lock_the_account_for_a_while(app_client: TestClient,
                                                        seeded: Seeded) -> None:
    add_user(seeded.settings, "acme", "throttled@acme.test", "analyst", PASSWORD)
    for _ in range(seeded.settings.console.max_failed_sign_ins):
        assert sign_in(app_client, "throttled@acme.test", "not the password") == ""
    assert sign_in(app_client, "throttled@acme.test") == ""  # right password, refused
    assert sign_in(app_client, "analyst@acme.test") != ""  # other accounts unaffected


def test_admins_manage_accounts_of_their_own_tenant_only(app_client: TestClient,
                                                         seeded: Seeded) -> None:
    csrf = sign_in(app_client, "analyst@acme.test")
    assert app_client.get("/admin/users").status_code == 403
    assert app_client.post("/admin/users", data={
        "email": "x@acme.test", "role": "admin", "password": PASSWORD,
        "csrf_token": csrf}).status_code == 403
    csrf = sign_in(app_client, "admin@acme.test")
    created = app_client.post("/admin/users", data={
        "email": "new@acme.test", "role": "analyst", "password": PASSWORD,
        "csrf_token": csrf})
    assert created.status_code == 303 and created.headers["location"] == "/admin/users"
    users = {u["email"]: u for u in app_client.get("/api/users").json()}
    assert "new@acme.test" in users and "analyst@globex.test" not in users
    assert all("password_hash" not in u for u in users.values())
    with psycopg.connect(seeded.url) as conn:
        globex_user = conn.execute("SELECT id FROM console_users "
                                   "WHERE email = 'analyst@globex.test'").fetchone()
    assert globex_user is not None
    assert app_client.post(f"/admin/users/{globex_user[0]}/disabled", data={
        "disabled": "true", "csrf_token": csrf}).status_code == 404
    new_id = users["new@acme.test"]["id"]
    assert app_client.post(f"/admin/users/{new_id}/disabled", data={
        "disabled": "true", "csrf_token": csrf}).status_code == 303
    actions = [a["action"] for a in app_client.get("/api/audit").json()]
    assert "user.create" in actions and "user.disable" in actions
    assert sign_in(app_client, "new@acme.test") == ""  # disabled: cannot sign in
    assert sign_in(app_client, "analyst@globex.test") != ""  # untouched


def test_console_role_cannot_read_password_hashes(seeded: Seeded) -> None:
    with psycopg.connect(seeded.url) as conn:
        conn.execute("SET ROLE secanalyst_console")
        conn.execute("SELECT set_config('app.tenant_id', 'acme', false)")
        assert conn.execute("SELECT count(*) FROM console_users").fetchone() != (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT password_hash FROM console_users")
        conn.rollback()


def test_users_create_command(seeded: Seeded, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from pipeline.cli.app import app

    monkeypatch.setenv("SECANALYST_DATABASE__URL", seeded.url)
    monkeypatch.setenv("SECANALYST_NEW_USER_PASSWORD", PASSWORD)
    result = CliRunner().invoke(app, ["users", "create", "--tenant", "initech",
                                      "--email", "boss@initech.test", "--role", "admin"])
    assert result.exit_code == 0, result.output
    clash = CliRunner().invoke(app, ["users", "create", "--tenant", "acme",
                                     "--email", "BOSS@initech.test"])
    assert clash.exit_code == 1 and "another tenant" in clash.output
    with psycopg.connect(seeded.url) as conn:
        row = conn.execute("SELECT u.role, u.password_hash, t.tenant_id FROM console_users u "
                           "JOIN tenants t USING (tenant_id) "
                           "WHERE email = 'boss@initech.test'").fetchone()
        audit = conn.execute("SELECT count(*) FROM audit_log WHERE tenant_id = 'initech' "
                             "AND action = 'user.create'").fetchone()
    assert row is not None and row[0] == "admin" and row[1].startswith("$argon2id$")
    assert audit == (1,)


def test_admins_create_and_revoke_their_tenants_api_keys(app_client: TestClient,
                                                         seeded: Seeded) -> None:
    from pipeline.store.apikeys import create_key, hash_key, load_pepper

    async def foreign_key() -> str:
        async with await psycopg.AsyncConnection.connect(seeded.url, autocommit=True) as conn:
            return (await create_key(conn, b"p" * 32, "globex", "theirs"))[0]

    foreign_id = asyncio.run(foreign_key())
    csrf = sign_in(app_client, "analyst@acme.test")
    assert app_client.get("/admin/apikeys").status_code == 403
    csrf = sign_in(app_client, "admin@acme.test")
    created = app_client.post("/admin/apikeys", data={"name": "siem", "csrf_token": csrf})
    assert created.status_code == 200 and created.headers["cache-control"] == "no-store"
    key = re.search(r'<pre id="new-key">(sak_[^<]+)</pre>', created.text)
    assert key is not None
    key_id = key.group(1).split("_")[1]
    with psycopg.connect(seeded.url) as conn:
        row = conn.execute("SELECT tenant_id, key_hash FROM api_keys WHERE key_id = %s",
                           (key_id,)).fetchone()
    assert row is not None and row[0] == "acme"
    assert bytes(row[1]) == hash_key(load_pepper(seeded.settings), key.group(1))
    listing = app_client.get("/admin/apikeys").text
    assert key_id in listing and foreign_id not in listing and key.group(1) not in listing
    assert app_client.post(f"/admin/apikeys/{foreign_id}/revoke",
                           data={"csrf_token": csrf}).status_code == 404
    assert app_client.post(f"/admin/apikeys/{key_id}/revoke",
                           data={"csrf_token": csrf}).status_code == 303
    with psycopg.connect(seeded.url) as conn:
        states: dict[str, bool] = dict(conn.execute(
            "SELECT key_id, revoked_at IS NOT NULL FROM api_keys").fetchall())
    assert states == {foreign_id: False, key_id: True}
    actions = [a["action"] for a in app_client.get("/api/audit").json()]
    assert "apikey.create" in actions and "apikey.revoke" in actions


def test_a_storm_is_one_incident_with_a_workflow(app_client: TestClient,
                                                 seeded: Seeded) -> None:
    with psycopg.connect(seeded.url) as conn:
        storm = insert_storm(conn, "umbrella", "k-int", 30)
        insert_storm(conn, "umbrella", "k-other", 2)
        insert_storm(conn, "globex", "k-int", 3)  # same key, another tenant
    csrf = sign_in(app_client, "analyst@umbrella.test")
    rows = app_client.get("/api/incidents").json()
    assert [r["alert_count"] for r in rows] == [30, 2]  # most recently seen first
    incident = rows[0]
    assert incident["severity"] == "critical" and incident["status"] == "new"
    assert sorted(incident["agents"]) == ["web-01", "web-02", "web-03"]
    detail = app_client.get(f"/api/incidents/{incident['id']}").json()
    assert sorted(v["id"] for v in detail["verdicts"]) == storm

    def change(body: dict[str, object]) -> int:
        answer = app_client.post("/api/incidents/change", json=body,
                                 headers={"X-CSRF-Token": csrf})
        return answer.status_code

    assert app_client.post("/api/incidents/change",
                           json={"action": "start", "ids": [incident["id"]]}
                           ).status_code == 403  # no CSRF header
    me = next(p for p in detail["people"] if p["email"] == "analyst@umbrella.test")["id"]
    assert change({"action": "assign", "ids": [incident["id"]], "assignee": me}) == 200
    mine = app_client.get("/api/incidents", params={"assignee": "me"}).json()
    assert [r["id"] for r in mine] == [incident["id"]]
    assert app_client.get("/api/incidents", params={"assignee": "none"}).json()[0][
        "alert_count"] == 2
    foreign_user = 1  # acme's analyst (the first account made): not assignable here
    assert change({"action": "assign", "ids": [incident["id"]],
                   "assignee": foreign_user}) == 422
    assert change({"action": "start", "ids": [incident["id"]]}) == 200
    assert change({"action": "resolve", "ids": [incident["id"]],
                   "resolution": "true_positive"}) == 422  # a note is required
    assert change({"action": "resolve", "ids": [incident["id"]],
                   "resolution": "maybe", "note": "x"}) == 422
    bulk = [r["id"] for r in rows]
    assert change({"action": "resolve", "ids": bulk, "resolution": "false_positive",
                   "note": "scanner of the red team"}) == 200
    resolved = app_client.get("/api/incidents", params={"status": "resolved"}).json()
    assert {r["id"] for r in resolved} == set(bulk)
    assert {r["resolution_note"] for r in resolved} == {"scanner of the red team"}
    actions = [a["action"] for a in
               app_client.get(f"/api/incidents/{incident['id']}").json()["audit"]]
    assert actions == ["incident.resolved", "incident.in_progress", "incident.assign"]

    sign_in(app_client, "analyst@globex.test")  # another tenant sees neither
    assert app_client.get(f"/api/incidents/{incident['id']}").status_code == 404
    csrf = sign_in(app_client, "analyst@globex.test")
    assert change({"action": "start", "ids": [incident["id"]]}) == 200
    with psycopg.connect(seeded.url) as conn:
        assert conn.execute("SELECT status FROM incidents WHERE id = %s",
                            (incident["id"],)).fetchone() == ("resolved",)
    page = app_client.get("/incidents").text
    assert "storm alert" not in page and "brute force trying" in page  # globex's own


def test_related_alerts_share_an_entity_within_the_window(app_client: TestClient,
                                                          seeded: Seeded) -> None:
    sign_in(app_client, "analyst@acme.test")
    acme_5 = seeded.ids["acme"][2]  # db-01, from 10.0.0.1, user admin; 10 min apart
    related = app_client.get(f"/api/verdicts/{acme_5}").json()["related"]
    lanes: dict[str, set[str]] = {}
    for r in related:
        lanes.setdefault(r["via"], set()).add(r["alert_id"])
    assert lanes == {"agent": {"acme-4", "acme-6"}, "src_ip": {"acme-1", "acme-3"},
                     "user": {"acme-1", "acme-3"}}  # never globex's 10.0.0.1
    page = app_client.get(f"/verdicts/{acme_5}").text
    timeline = page.split('id="related"', 1)[1].split("</svg>", 1)[0]
    assert timeline.count('<a class="event"') == 6
    assert f'href="/verdicts/{seeded.ids["acme"][1]}"' in timeline  # acme-6


def test_related_alerts_window_is_configurable(seeded: Seeded) -> None:
    settings = seeded.settings.model_copy(update={"console": seeded.settings.console.model_copy(
        update={"related_window_s": 15 * 60})})
    with TestClient(create_console_app(settings), base_url="https://testserver",
                    follow_redirects=False) as client:
        sign_in(client, "analyst@acme.test")
        related = client.get(f"/api/verdicts/{seeded.ids['acme'][2]}").json()["related"]
    assert {(r["via"], r["alert_id"]) for r in related} == {
        ("agent", "acme-4"), ("agent", "acme-6")}  # 10 min away; 1 and 3 are 20+ min


def test_pipeline_verdict_writes_keep_incidents_counted(seeded: Seeded) -> None:
    """The pipeline's own insert (pipeline/store/verdicts.py) through the triggers: an
    original and a reused verdict of one incident count 2; a redelivery counts nothing."""
    import asyncio

    from psycopg import AsyncConnection

    from pipeline.store.verdicts import count_reuse, insert_verdict
    from schemas.verdict import Severity, Verdict

    def verdict(alert_id: str, severity: Severity, reused: str | None) -> Verdict:
        return Verdict(tenant_id="umbrella", alert_id=alert_id, rule_id="5712",
                       rule_level=10, severity=severity, severity_source="rule level",
                       summary="s", attack=[], next_steps=[], cited_chunks=[],
                       status="reused" if reused else "explained", reused_from=reused,
                       fingerprint="fp-pipe", incident_key="k-pipeline", model_name="m",
                       prompt_version="v", input_tokens=1, output_tokens=1, latency_ms=1)

    async def write() -> list[bool]:
        async with await AsyncConnection.connect(seeded.url) as conn:
            done = [await insert_verdict(conn, verdict("pipe-1", "medium", None)),
                    await insert_verdict(conn, verdict("pipe-2", "high", "pipe-1")),
                    await insert_verdict(conn, verdict("pipe-2", "high", "pipe-1"))]
            await count_reuse(conn, "umbrella", "pipe-1")
            await conn.commit()
            return done

    assert asyncio.run(write()) == [True, True, False]
    with psycopg.connect(seeded.url) as conn:
        row = conn.execute("SELECT alert_count, severity, status FROM incidents "
                           "WHERE tenant_id = 'umbrella' AND incident_key = 'k-pipeline'"
                           ).fetchone()
        stamped = conn.execute("SELECT count(DISTINCT incident_id) FROM verdicts "
                               "WHERE alert_id IN ('pipe-1', 'pipe-2')").fetchone()
    assert row == (2, "high", "new") and stamped == (1,)
