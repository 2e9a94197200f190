"""OIDC sign-in to the review console against a real OpenID provider: panva's
oidc-provider (node, tests/oidc/provider.mjs) on a free port, the console under uvicorn on
another, and an httpx client that keeps cookies and follows the real redirects (the
provider's sign-in page is a one-field form). The console's own PostgreSQL is seeded with
the tenants acme and globex (tests/e2e/console_seed.py)."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import secrets
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import uvicorn
from fastapi.testclient import TestClient
from pydantic import SecretStr

from pipeline.cli.console import add_user
from pipeline.config import ConsoleSettings, DatabaseSettings, OIDCSettings, Settings
from pipeline.web.console.app import create_console_app
from pipeline.web.console.oidc import CALLBACK_PATH, FLOW_COOKIE
from tests.e2e.console_seed import PASSWORD, Seeded, console_database
from tests.servers import free_port, stop

pytestmark = pytest.mark.integration
PROVIDER_DIR = Path(__file__).resolve().parents[1] / "oidc"
CLIENT_ID = "secanalyst-console"
CLIENT_SECRET = secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Console:
    base: str
    seeded: Seeded


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.skip("no `node` on PATH: the test OpenID provider (tests/oidc) needs Node.js")
    if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "npm is needed to install tests/oidc (npm ci)"
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=PROVIDER_DIR, check=True)
    return found


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    with console_database(page_size=50) as found:
        # tenant "initech" by the provider's claim, but an account of acme
        add_user(found.settings, "acme", "analyst@initech.test", "analyst", PASSWORD)
        yield found


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()  # the console, the auto-provisioning console


PROVIDER_READY_S = 30.0  # it prints `ready` well within a second when it starts at all


def start_provider(node: str, redirects: str, attempts: int = 3,
                   ) -> tuple[subprocess.Popen[bytes], str]:
    """The provider process and its issuer URL. A start that prints nothing for
    PROVIDER_READY_S is stopped and tried again: once in a CI run node sat silent and the
    fixture's bare readline() waited until pytest's 900 s timeout failed the module."""
    seen: list[str] = []
    for _ in range(attempts):
        proc = subprocess.Popen(
            [node, "provider.mjs"], cwd=PROVIDER_DIR, stdout=subprocess.PIPE,
            env={"PATH": "/usr/bin:/bin", "PORT": "0", "CLIENT_ID": CLIENT_ID,
                 "CLIENT_SECRET": CLIENT_SECRET, "REDIRECT_URI": redirects})
        assert proc.stdout is not None
        if select.select([proc.stdout], [], [], PROVIDER_READY_S)[0]:
            line = proc.stdout.readline().decode().strip()
            if line.startswith("ready "):
                return proc, line.split(" ", 1)[1]
            seen.append(line)
        else:
            seen.append(f"(nothing in {PROVIDER_READY_S:g} s)")
        stop(proc)
    pytest.fail(f"the OIDC provider did not start in {attempts} attempts: {seen}")


@pytest.fixture(scope="module")
def issuer(node: str, ports: tuple[int, int]) -> Iterator[str]:
    redirects = ",".join(f"http://127.0.0.1:{p}{CALLBACK_PATH}" for p in ports)
    proc, url = start_provider(node, redirects)
    try:
        yield url
    finally:
        stop(proc)


def oidc_settings(seeded: Seeded, issuer: str, port: int, *, cookie_secure: bool = False,
                  **extra: Any) -> Settings:
    # cookie_secure off: httpx, unlike browsers, sends no Secure cookie to http://127.0.0.1
    # (test_flow_cookie_is_locked_down checks the production default over https).
    oidc = OIDCSettings.model_validate({
        "provider_name": "Test IdP", "issuer": issuer, "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET, "scopes": ["openid", "email"],
        "redirect_base_url": f"http://127.0.0.1:{port}", "tenant_claim": "tenant", **extra})
    return Settings(database=DatabaseSettings(url=SecretStr(seeded.url)),
                    state_dir=seeded.settings.state_dir,
                    console=ConsoleSettings(page_size=50, cookie_secure=cookie_secure,
                                            oidc=oidc))


@contextlib.contextmanager
def console_server(settings: Settings, port: int) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(create_console_app(settings), host="127.0.0.1",
                                           port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the console did not start"
        time.sleep(0.05)
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def console(seeded: Seeded, issuer: str, ports: tuple[int, int]) -> Iterator[Console]:
    with console_server(oidc_settings(seeded, issuer, ports[0]), ports[0]) as base:
        yield Console(base, seeded)


def browser() -> httpx.Client:
    return httpx.Client(follow_redirects=False, timeout=30)


def to_callback(client: httpx.Client, base: str, login: str) -> str:
    """Start the sign-in at the console, sign in at the provider as `login`; return the
    callback URL the provider redirects the browser to (not followed)."""
    start = client.get(f"{base}/login/oidc")
    assert start.status_code == 303, start.text
    page = client.get(start.headers["location"], follow_redirects=True)
    form = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert form is not None, page.text
    answer = client.post(urljoin(str(page.url), form.group(1)), data={"login": login})
    while answer.is_redirect:
        location = urljoin(str(answer.url), answer.headers["location"])
        if location.startswith(f"{base}{CALLBACK_PATH}"):
            return location
        answer = client.get(location)
    raise AssertionError(f"the provider did not redirect back: {answer.text[:500]}")


def sign_in(client: httpx.Client, base: str, login: str) -> httpx.Response:
    return client.get(to_callback(client, base, login))


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def audit_rows(seeded: Seeded, action: str) -> list[tuple[str, str | None, dict[str, Any]]]:
    with psycopg.connect(seeded.url) as conn:
        return [(r[0], r[1], r[2]) for r in conn.execute(
            """SELECT tenant_id, user_email, detail FROM audit_log
               WHERE action = %s AND detail->>'method' = 'oidc' ORDER BY id""",
            (action,)).fetchall()]


def assert_signed_out(client: httpx.Client, base: str, answer: httpx.Response) -> None:
    assert "sa_session" not in answer.headers.get("set-cookie", "")
    assert client.cookies.get("sa_session") is None
    assert client.get(f"{base}/api/verdicts").status_code == 401
    assert client.get(f"{base}/").headers["location"] == "/login"


def test_login_page_offers_the_provider(console: Console) -> None:
    page = httpx.get(f"{console.base}/login")
    assert 'href="/login/oidc"' in page.text and "Sign in with Test IdP" in page.text


def test_flow_cookie_is_locked_down(seeded: Seeded, issuer: str,
                                    ports: tuple[int, int]) -> None:
    settings = oidc_settings(seeded, issuer, ports[0], cookie_secure=True)
    with TestClient(create_console_app(settings), base_url="https://testserver",
                    follow_redirects=False) as client:
        start = client.get("/login/oidc")
    assert start.status_code == 303 and start.headers["cache-control"] == "no-store"
    target = urlsplit(start.headers["location"])
    query = dict(parse_qsl(target.query))
    assert f"{target.scheme}://{target.netloc}" == issuer
    assert query["response_type"] == "code" and query["client_id"] == CLIENT_ID
    assert query["code_challenge_method"] == "S256" and query["code_challenge"]
    assert query["state"] and query["nonce"] and query["scope"] == "openid email"
    assert query["redirect_uri"] == f"http://127.0.0.1:{ports[0]}{CALLBACK_PATH}"
    cookie = start.headers["set-cookie"].lower()
    for attribute in ("httponly", "secure", "samesite=lax", "path=/login/oidc",
                      "max-age=600"):
        assert attribute in cookie


def test_sign_in_via_provider_lands_on_the_tenants_queue(console: Console,
                                                         issuer: str) -> None:
    with browser() as client:
        answer = sign_in(client, console.base, "analyst@acme.test")
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        cookie = answer.headers["set-cookie"].lower()
        assert "sa_session=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
        assert client.cookies.get(FLOW_COOKIE) is None  # used once, then dropped
        queue = client.get(f"{console.base}/")
        assert queue.status_code == 200
        assert "analyst@acme.test · acme · analyst" in queue.text
        assert "acme sshd" in queue.text and "globex" not in queue.text
        items = client.get(f"{console.base}/api/verdicts", params={"limit": 100}).json()
        assert [i["id"] for i in items["items"]] == console.seeded.ids["acme"]
    tenant, email, detail = audit_rows(console.seeded, "auth.sign_in")[-1]
    assert (tenant, email) == ("acme", "analyst@acme.test")
    assert detail["issuer"] == issuer
    assert detail["subject"].startswith("acct-")


def test_tenant_b_via_oidc_cannot_see_tenant_a(console: Console) -> None:
    with browser() as client:
        assert sign_in(client, console.base, "analyst@globex.test").status_code == 303
        items = client.get(f"{console.base}/api/verdicts", params={"limit": 100}).json()
        assert [i["id"] for i in items["items"]] == console.seeded.ids["globex"]
        foreign = console.seeded.ids["acme"][0]
        assert client.get(f"{console.base}/api/verdicts/{foreign}").status_code == 404
        assert client.get(f"{console.base}/verdicts/{foreign}").status_code == 404
        assert "acme sshd" not in client.get(f"{console.base}/").text


def test_tampered_state_is_refused_without_a_session(console: Console) -> None:
    with browser() as client:
        callback = to_callback(client, console.base, "analyst@acme.test")
        code = dict(parse_qsl(urlsplit(callback).query))["code"]
        answer = client.get(with_query(callback, state="forged-" + secrets.token_hex(8)))
        assert answer.status_code == 400
        assert "did not start here" in answer.text
        assert code not in answer.text and CLIENT_SECRET not in answer.text
        assert_signed_out(client, console.base, answer)
    assert audit_rows(console.seeded, "auth.sign_in_failed")[-1][2]["reason"] == "state"


def test_a_callback_cannot_be_replayed(console: Console) -> None:
    with browser() as client:
        callback = to_callback(client, console.base, "analyst@acme.test")
        assert client.get(callback).status_code == 303
    with browser() as other:  # another browser with the same redirect: no flow cookie
        answer = other.get(callback)
        assert answer.status_code == 400
        assert_signed_out(other, console.base, answer)


def test_wrong_nonce_is_refused_without_a_session(console: Console) -> None:
    with browser() as client:
        callback = to_callback(client, console.base, "analyst@acme.test")
        flow_cookie = client.cookies.get(FLOW_COOKIE, path="/login/oidc")
        assert flow_cookie is not None
        raw = base64.urlsafe_b64decode(flow_cookie + "=" * (-len(flow_cookie) % 4))
        flow = json.loads(raw)
        flow["n"] = "not-the-nonce-sent"  # same state and PKCE verifier, another nonce
        forged = base64.urlsafe_b64encode(json.dumps(flow).encode()).decode().rstrip("=")
        client.cookies.set(FLOW_COOKIE, forged, domain="127.0.0.1", path="/login/oidc")
        answer = client.get(callback)
        assert answer.status_code == 400, answer.text
        assert "could not be verified" in answer.text
        assert_signed_out(client, console.base, answer)
    reason = audit_rows(console.seeded, "auth.sign_in_failed")[-1][2]["reason"]
    assert reason == "nonce"


def test_unknown_email_is_refused_without_a_session(console: Console) -> None:
    with browser() as client:
        answer = sign_in(client, console.base, "stranger@acme.test")
        assert answer.status_code == 403
        assert "No console account matches your email" in answer.text
        assert_signed_out(client, console.base, answer)
    tenant, email, detail = audit_rows(console.seeded, "auth.sign_in_failed")[-1]
    assert (tenant, email, detail["reason"]) == ("acme", "stranger@acme.test",
                                                 "unknown_user")
    with psycopg.connect(console.seeded.url) as conn:  # not provisioned: off by default
        assert conn.execute("SELECT count(*) FROM console_users WHERE email = %s",
                            ("stranger@acme.test",)).fetchone() == (0,)


def test_unverified_email_or_other_tenant_is_refused(console: Console) -> None:
    for login, status, reason in (("unverified@acme.test", 403, "email"),
                                  ("analyst@initech.test", 403, "tenant")):
        with browser() as client:
            answer = sign_in(client, console.base, login)
            assert answer.status_code == status, login
            assert_signed_out(client, console.base, answer)
        assert audit_rows(console.seeded, "auth.sign_in_failed")[-1][2]["reason"] == reason


def test_auto_provisioning_makes_an_analyst_of_an_allowed_domain(
        seeded: Seeded, issuer: str, ports: tuple[int, int]) -> None:
    settings = oidc_settings(seeded, issuer, ports[1], auto_provision=True,
                             allowed_email_domains=["globex.test"])
    with console_server(settings, ports[1]) as base:
        with browser() as client:
            assert sign_in(client, base, "newcomer@globex.test").status_code == 303
            assert "newcomer@globex.test · globex · analyst" in client.get(f"{base}/").text
            items = client.get(f"{base}/api/verdicts", params={"limit": 100}).json()
            assert [i["id"] for i in items["items"]] == seeded.ids["globex"]
        with browser() as client:  # a domain not on the list
            answer = sign_in(client, base, "newcomer@acme.test")
            assert answer.status_code == 403 and "domain" in answer.text
            assert_signed_out(client, base, answer)
    with psycopg.connect(seeded.url) as conn:
        rows = conn.execute("SELECT tenant_id, role FROM console_users WHERE email LIKE "
                            "'newcomer@%%' ORDER BY email").fetchall()
    assert rows == [("globex", "analyst")]
    created = [d for t, _, d in audit_rows(seeded, "user.create") if t == "globex"]
    assert created and created[-1]["via"] == "oidc"
