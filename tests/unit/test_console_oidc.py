"""OIDC sign-in pieces without a provider: settings, the flow cookie, claims → identity,
and ID token verification with real RS256 signatures (the provider's discovery document
and JWKS given to the client as if fetched). The whole flow against a real provider:
tests/integration/test_console_oidc.py."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from pydantic import ValidationError

from pipeline.config import ConsoleSettings, OIDCSettings, Settings
from pipeline.store.users import NO_PASSWORD
from pipeline.web.console.app import create_console_app
from pipeline.web.console.oidc import (
    Flow,
    OIDCProvider,
    SignInRefused,
    decode_flow,
    encode_flow,
    identity_from_claims,
)
from pipeline.web.console.security import verify_password

ISSUER = "https://idp.example.com"
CLIENT = "console"


def oidc(**changes: Any) -> OIDCSettings:
    values: dict[str, Any] = {"issuer": ISSUER, "client_id": CLIENT,
                              "client_secret": "s" * 32,
                              "redirect_base_url": "https://console.example.com/"}
    values.update(changes)
    return OIDCSettings.model_validate(values)


# ---- settings -------------------------------------------------------------------------

def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().console.oidc is None  # off unless configured
    monkeypatch.setenv("SECANALYST_CONSOLE__OIDC__ISSUER", ISSUER)
    monkeypatch.setenv("SECANALYST_CONSOLE__OIDC__CLIENT_ID", CLIENT)
    monkeypatch.setenv("SECANALYST_CONSOLE__OIDC__REDIRECT_BASE_URL", "https://c.example.com")
    monkeypatch.setenv("SECANALYST_CONSOLE__OIDC__ALLOWED_EMAIL_DOMAINS", '["Acme.Test"]')
    monkeypatch.setenv("SECANALYST_CONSOLE__OIDC__TENANT_CLAIM", "org")
    found = Settings().console.oidc
    assert found is not None
    assert found.allowed_email_domains == ["acme.test"] and found.tenant_claim == "org"
    assert found.redirect_uri == "https://c.example.com/login/oidc/callback"
    assert not found.auto_provision and found.require_email_verified


@pytest.mark.parametrize("changes", [
    {"issuer": "http://idp.example.com"},              # plain http off loopback
    {"redirect_base_url": "http://console.example.com"},
    {"scopes": ["email"]},                             # no openid
    {"tenant_claim": "org", "tenant": "acme"},         # two tenant sources
    {"auto_provision": True},                          # provisioning into no tenant
])
def test_unsafe_or_ambiguous_settings_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        oidc(**changes)


def test_loopback_may_use_http() -> None:
    assert oidc(issuer="http://127.0.0.1:9000").issuer == "http://127.0.0.1:9000"


# ---- the flow cookie ------------------------------------------------------------------

def test_flow_cookie_round_trips_and_rejects_garbage() -> None:
    flow = Flow("st", "no", "ver")
    assert decode_flow(encode_flow(flow)) == flow
    for garbage in (None, "", "!!!", "e30", "x" * 2000, encode_flow(Flow("", "n", "v"))):
        assert decode_flow(garbage) is None


# ---- claims → identity ----------------------------------------------------------------

CLAIMS = {"sub": "u1", "email": "ana@acme.test", "email_verified": True, "org": "acme"}


def refusal(cfg: OIDCSettings, claims: dict[str, Any]) -> str:
    with pytest.raises(SignInRefused) as caught:
        identity_from_claims(cfg, claims)
    return caught.value.reason


def test_identity_from_verified_claims() -> None:
    who = identity_from_claims(oidc(tenant_claim="org"), CLAIMS)
    assert (who.subject, who.email, who.tenant, who.issuer) == ("u1", "ana@acme.test",
                                                                "acme", ISSUER)
    assert identity_from_claims(oidc(tenant="fixed"), CLAIMS).tenant == "fixed"
    assert identity_from_claims(oidc(), CLAIMS).tenant is None
    allowed = oidc(allowed_email_domains=["ACME.test"])
    assert identity_from_claims(allowed, {**CLAIMS, "email": "Ana@ACME.TEST"}).email


def test_claims_that_may_not_sign_in() -> None:
    assert refusal(oidc(), {**CLAIMS, "email_verified": False}) == "email"
    assert refusal(oidc(), {**CLAIMS, "email_verified": "true"}) == "email"
    assert refusal(oidc(), {"sub": "u1"}) == "email"
    assert refusal(oidc(allowed_email_domains=["globex.test"]), CLAIMS) == "domain"
    assert refusal(oidc(tenant_claim="tenant"), CLAIMS) == "tenant"
    assert identity_from_claims(oidc(require_email_verified=False),
                                {**CLAIMS, "email_verified": False}).email


def test_a_provisioned_account_has_no_usable_password() -> None:
    assert not verify_password(NO_PASSWORD, NO_PASSWORD)


# ---- ID token verification (real signatures, no network) ------------------------------

KEY = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})
OTHER = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig", "alg": "RS256"})


def provider() -> OIDCProvider:
    rp = OIDCProvider(oidc())
    rp._client.server_metadata.update({  # as discovery and the JWKS fetch would fill it
        "_loaded_at": time.time(), "issuer": ISSUER,
        "jwks": KeySet([KEY]).as_dict(private=False),
        "id_token_signing_alg_values_supported": ["RS256"]})
    return rp


def id_token(key: RSAKey = KEY, alg: str = "RS256", **changes: Any) -> dict[str, str]:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": CLIENT, "sub": "u1", "iat": now, "exp": now + 300,
              "nonce": "n1"}
    claims.update(changes)
    return {"id_token": jwt.encode({"alg": alg, "kid": "k1"}, claims, key),
            "access_token": "at", "token_type": "Bearer"}


async def test_a_valid_id_token_is_accepted() -> None:
    claims = await provider().verify_id_token(id_token(), "n1")
    assert claims["sub"] == "u1" and claims["aud"] == CLIENT


@pytest.mark.parametrize(("token", "reason"), [
    (lambda: id_token(nonce="other"), "nonce"),
    (lambda: id_token(nonce=None), "nonce"),
    (lambda: id_token(aud="another-client"), "token"),
    (lambda: id_token(iss="https://evil.example.com"), "token"),
    (lambda: id_token(exp=int(time.time()) - 3600), "token"),
    (lambda: id_token(key=OTHER), "token"),  # signed by a key not in the JWKS
])
async def test_a_bad_id_token_is_refused(token: Any, reason: str) -> None:
    with pytest.raises(SignInRefused) as caught:
        await provider().verify_id_token(token(), "n1")
    assert caught.value.reason == reason


async def test_an_unsigned_id_token_is_refused() -> None:
    unsigned = id_token()
    _, payload, _ = unsigned["id_token"].split(".")
    none = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).decode()
    unsigned["id_token"] = f"{none.rstrip('=')}.{payload}."
    with pytest.raises(SignInRefused):
        await provider().verify_id_token(unsigned, "n1")


# ---- the login page -------------------------------------------------------------------

def test_login_page_offers_the_provider_only_when_configured() -> None:
    with_oidc = Settings(console=ConsoleSettings(oidc=oidc(provider_name="Acme SSO")))
    page = TestClient(create_console_app(with_oidc)).get("/login").text  # no lifespan
    assert "Sign in with Acme SSO" in page and 'href="/login/oidc"' in page
    plain = TestClient(create_console_app(Settings())).get("/login").text
    assert "/login/oidc" not in plain
