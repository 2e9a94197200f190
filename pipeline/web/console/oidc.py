"""OpenID Connect sign-in to the console: authorization code flow with PKCE, state and
nonce, through Authlib (discovery, token exchange, ID token signature and claims checked
against the provider's JWKS).

GET /login/oidc            → the provider, with a short-lived flow cookie (state, nonce,
                             PKCE verifier; httponly, bound to this browser)
GET /login/oidc/callback   → the same server-side session the password sign-in creates,
                             or a page saying why not (no session, an audit entry)

Who may sign in: a verified `email` claim (of an allowed domain, when listed) that
matches an account made with `secanalyst users create`, in the tenant the provider names
(`tenant_claim` / `tenant`), or, with `auto_provision`, a new analyst of that tenant.

No `from __future__ import annotations` here: FastAPI resolves the dependency aliases at
definition time."""

import base64
import json
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from authlib.oauth2 import OAuth2Error
from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.templating import Jinja2Templates
from joserfc.errors import JoseError
from psycopg import AsyncConnection

from pipeline.config import ConsoleSettings, OIDCSettings, Settings
from pipeline.store import audit, sessions, users
from pipeline.store.tenant_scope import tenant_scope
from pipeline.web.console.deps import Resources, Templates
from pipeline.web.console.resources import ConsoleResources
from pipeline.web.console.security import SESSION_COOKIE, same_token

# Authlib's HTTP client is httpx2 when installed, else httpx (with a deprecation warning:
# httpx is what the rest of secanalyst uses); its transport errors are that module's.
try:
    import httpx2 as httpclient
except ImportError:
    import httpx as httpclient  # type: ignore[no-redef]
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="The httpx module is deprecated")
    from authlib.integrations.starlette_client import OAuth, OAuthError

log = structlog.get_logger(__name__)

START_PATH = "/login/oidc"
CALLBACK_PATH = "/login/oidc/callback"
FLOW_COOKIE = "sa_oidc_flow"
FLOW_TTL_S = 600
NO_TENANT = "-"  # audit rows of refusals that no tenant can be told from
_ERROR_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

_MESSAGES = {
    "state": "This sign-in did not start here or has expired. Start again from the "
             "sign-in page.",
    "provider_error": "The identity provider did not sign you in.",
    "unreachable": "The identity provider could not be reached. Try again later.",
    "discovery": "The identity provider's configuration does not match this console's "
                 "settings.",
    "token": "The identity provider's answer could not be verified.",
    "nonce": "The identity provider's answer could not be verified.",
    "email": "The identity provider did not send a verified email address.",
    "domain": "Your email domain may not sign in to this console.",
    "tenant": "Your account does not belong to the tenant your identity provider names.",
    "unknown_user": "No console account matches your email address. Ask an admin of "
                    "your tenant to create one.",
}
_STATUS = {"unreachable": 502, "discovery": 502, "domain": 403, "tenant": 403,
           "unknown_user": 403, "email": 403}


class SignInRefused(Exception):
    """Why an OIDC sign-in is refused: a reason code (audited and logged), what the audit
    entry may say (never a token or a secret) and the tenant it belongs to, if known."""

    def __init__(self, reason: str, detail: dict[str, Any] | None = None,
                 tenant: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or {}
        self.tenant = tenant

    @property
    def message(self) -> str:
        return _MESSAGES[self.reason]

    @property
    def status_code(self) -> int:
        return _STATUS.get(self.reason, 400)


# ---- the flow cookie ------------------------------------------------------------------

@dataclass(frozen=True)
class Flow:
    """What the callback needs from the start: random values bound to this browser by an
    httponly cookie (a forged cookie could only replay the attacker's own sign-in, which
    PKCE and state already tie to the browser that started it)."""

    state: str
    nonce: str
    code_verifier: str


def encode_flow(flow: Flow) -> str:
    raw = json.dumps({"s": flow.state, "n": flow.nonce, "v": flow.code_verifier})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_flow(value: str | None) -> Flow | None:
    if not value or len(value) > 1024:
        return None
    try:
        raw = json.loads(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)))
        flow = Flow(state=raw["s"], nonce=raw["n"], code_verifier=raw["v"])
    except (ValueError, TypeError, KeyError):
        return None
    if not all(isinstance(v, str) and v for v in (flow.state, flow.nonce,
                                                   flow.code_verifier)):
        return None
    return flow


# ---- who signed in --------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    issuer: str
    subject: str
    email: str
    tenant: str | None  # from tenant_claim or the fixed tenant; None: the account's own

    def audit_detail(self) -> dict[str, Any]:
        return {"method": "oidc", "issuer": self.issuer, "subject": self.subject}


def identity_from_claims(cfg: OIDCSettings, claims: Mapping[str, Any]) -> Identity:
    """The verified claims (ID token, completed by userinfo) → who signed in, or why not."""
    subject = str(claims["sub"])
    base = {"method": "oidc", "issuer": cfg.issuer, "subject": subject}
    tenant = cfg.tenant
    if cfg.tenant_claim:
        named = claims.get(cfg.tenant_claim)
        tenant = named.strip() if isinstance(named, str) and named.strip() else None
        if tenant is None:
            raise SignInRefused("tenant", {**base, "claim": cfg.tenant_claim})
    email = claims.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise SignInRefused("email", base, tenant)
    email = email.strip()
    detail = {**base, "email": email}
    if cfg.require_email_verified and claims.get("email_verified") is not True:
        raise SignInRefused("email", {**detail, "email_verified": False}, tenant)
    domain = email.rsplit("@", 1)[1].lower()
    if cfg.allowed_email_domains and domain not in cfg.allowed_email_domains:
        raise SignInRefused("domain", detail, tenant)
    return Identity(cfg.issuer, subject, email, tenant)


async def account_for(conn: AsyncConnection, cfg: OIDCSettings,
                      who: Identity) -> tuple[users.User, bool]:
    """The console account of `who` (owner connection): (user, newly provisioned)."""
    detail = {**who.audit_detail(), "email": who.email}
    user = await users.find_user(conn, who.email)
    if user is not None:
        if who.tenant is not None and user.tenant_id != who.tenant:
            raise SignInRefused("tenant", {**detail, "tenant_claimed": who.tenant},
                                user.tenant_id)
        return user, False
    if not cfg.auto_provision or who.tenant is None:
        raise SignInRefused("unknown_user", detail, who.tenant)
    if not await users.tenant_exists(conn, who.tenant):
        raise SignInRefused("tenant", {**detail, "unknown_tenant": who.tenant})
    created = await users.provision_analyst(conn, who.tenant, who.email)
    if created is None:  # taken meanwhile, or a disabled account
        raise SignInRefused("unknown_user", detail, who.tenant)
    return created, True


# ---- the provider ---------------------------------------------------------------------

@dataclass
class OIDCProvider:
    """The relying party: Authlib's OAuth 2 / OIDC client for one provider, with the
    discovery document and JWKS cached (the JWKS is fetched again on an unknown key id)."""

    cfg: OIDCSettings
    _client: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        secret = self.cfg.client_secret
        client_kwargs: dict[str, Any] = {
            "scope": " ".join(self.cfg.scopes), "code_challenge_method": "S256",
            "timeout": self.cfg.http_timeout_s,
            "token_endpoint_auth_method": "client_secret_basic" if secret else "none"}
        self._client = OAuth().register(
            "console", client_id=self.cfg.client_id,
            client_secret=secret.get_secret_value() if secret else None,
            server_metadata_url=discovery_url(self.cfg.issuer),
            client_kwargs=client_kwargs)

    async def metadata(self) -> dict[str, Any]:
        try:
            found: dict[str, Any] = await self._client.load_server_metadata()
        except (httpclient.HTTPError, ValueError) as exc:
            raise SignInRefused("unreachable", {"method": "oidc", "issuer": self.cfg.issuer,
                                                "error": type(exc).__name__}) from exc
        if found.get("issuer") != self.cfg.issuer:
            self._client.server_metadata.clear()  # look again next time
            raise SignInRefused("discovery", {"method": "oidc", "issuer": self.cfg.issuer,
                                              "discovered": str(found.get("issuer"))})
        algs = found.get("id_token_signing_alg_values_supported") or ["RS256"]
        found["id_token_signing_alg_values_supported"] = [a for a in algs if a != "none"]
        return found

    async def begin(self) -> tuple[str, Flow]:
        """The provider's authorization URL and the flow to remember."""
        await self.metadata()
        found = await self._client.create_authorization_url(self.cfg.redirect_uri)
        return found["url"], Flow(found["state"], found["nonce"], found["code_verifier"])

    async def finish(self, flow: Flow | None, params: Mapping[str, str]) -> Identity:
        """The provider's redirect back (`params`) → the verified identity."""
        base = {"method": "oidc", "issuer": self.cfg.issuer}
        if flow is None or not same_token(flow.state, params.get("state")):
            raise SignInRefused("state", base)
        metadata = await self.metadata()
        iss = params.get("iss")
        if (iss is not None and iss != self.cfg.issuer) or (
                iss is None and metadata.get("authorization_response_iss_parameter_supported")):
            raise SignInRefused("discovery", {**base, "iss": str(iss)})
        if "error" in params:
            code = params["error"]
            raise SignInRefused("provider_error", {
                **base, "error": code if _ERROR_CODE.match(code) else "invalid"})
        if not params.get("code"):
            raise SignInRefused("token", {**base, "error": "no code"})
        try:
            token = await self._client.fetch_access_token(
                redirect_uri=self.cfg.redirect_uri, code=params["code"],
                code_verifier=flow.code_verifier)
        except httpclient.TransportError as exc:
            raise SignInRefused("unreachable", {**base, "error": type(exc).__name__}) from exc
        except (OAuthError, OAuth2Error, httpclient.HTTPError, ValueError) as exc:
            raise SignInRefused("token", {**base, "error": _oauth_error(exc)}) from exc
        if "id_token" not in token:
            raise SignInRefused("token", {**base, "error": "no id_token"})
        claims = await self.verify_id_token(token, flow.nonce)
        missing = [c for c in ("email", "email_verified", self.cfg.tenant_claim)
                   if c and c not in claims]
        if missing and metadata.get("userinfo_endpoint"):
            claims = {**await self._userinfo(token, claims["sub"], base), **claims}
        return identity_from_claims(self.cfg, claims)

    async def verify_id_token(self, token: dict[str, Any], nonce: str) -> dict[str, Any]:
        """The ID token's claims once its signature (the provider's JWKS, fetched again
        on an unknown key id), iss, aud, exp and nonce are checked."""
        base = {"method": "oidc", "issuer": self.cfg.issuer}
        options = {"iss": {"essential": True, "value": self.cfg.issuer},
                   "aud": {"essential": True, "value": self.cfg.client_id},
                   "sub": {"essential": True}, "nonce": {"essential": True}}
        try:
            claims = await self._client.parse_id_token(
                token, nonce=nonce, claims_options=options, leeway=self.cfg.clock_skew_s)
        except JoseError as exc:
            claim = getattr(exc, "claim", None)
            raise SignInRefused("nonce" if claim == "nonce" else "token",
                                {**base, "error": exc.error, "claim": claim}) from exc
        except httpclient.HTTPError as exc:  # the JWKS
            raise SignInRefused("unreachable", {**base, "error": type(exc).__name__}) from exc
        return dict(claims)

    async def _userinfo(self, token: dict[str, Any], subject: str,
                        base: dict[str, Any]) -> dict[str, Any]:
        """Claims the ID token left out (OIDC Core 5.4: with an access token, scope claims
        may come from userinfo only); its `sub` must be the ID token's (5.3.2)."""
        try:
            found = dict(await self._client.userinfo(token=token))
        except (OAuthError, httpclient.HTTPError, ValueError) as exc:
            raise SignInRefused("token", {**base, "error": f"userinfo: {_oauth_error(exc)}"}
                                ) from exc
        if found.get("sub") != subject:
            raise SignInRefused("token", {**base, "error": "userinfo sub differs"})
        return found


def discovery_url(issuer: str) -> str:
    return f"{issuer.rstrip('/')}/.well-known/openid-configuration"


def _oauth_error(exc: Exception) -> str:
    code = getattr(exc, "error", None)
    return code if isinstance(code, str) and _ERROR_CODE.match(code) else type(exc).__name__


# ---- the routes ----------------------------------------------------------------------

def create_oidc_router(settings: Settings, provider: OIDCProvider | None = None) -> APIRouter:
    console = settings.console
    if console.oidc is None:
        raise ValueError("console.oidc is not configured")
    cfg = console.oidc
    rp = provider or OIDCProvider(cfg)
    router = APIRouter(include_in_schema=False)

    @router.get(START_PATH)
    async def start(request: Request, res: Resources, templates: Templates) -> Response:
        try:
            url, flow = await rp.begin()
        except SignInRefused as exc:
            await _audit_refusal(res, settings, exc)
            return _refused_page(request, templates, cfg, exc)
        response = RedirectResponse(url, status_code=303)
        response.headers["Cache-Control"] = "no-store"
        # SameSite=Lax: the provider's redirect back is a top-level cross-site GET.
        response.set_cookie(FLOW_COOKIE, encode_flow(flow), max_age=FLOW_TTL_S,
                            httponly=True, samesite="lax", secure=console.cookie_secure,
                            path=START_PATH)
        return response

    @router.get(CALLBACK_PATH)
    async def callback(request: Request, res: Resources, templates: Templates) -> Response:
        flow = decode_flow(request.cookies.get(FLOW_COOKIE))
        try:
            who = await rp.finish(flow, request.query_params)
            token = await _sign_in(res, console, cfg, who)
        except SignInRefused as exc:
            await _audit_refusal(res, settings, exc)
            return _refused_page(request, templates, cfg, exc)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax",
                            secure=console.cookie_secure, max_age=int(console.session_ttl_s))
        response.delete_cookie(FLOW_COOKIE, path=START_PATH)
        return response

    return router


async def _sign_in(res: ConsoleResources, console: ConsoleSettings, cfg: OIDCSettings,
                   who: Identity) -> str:
    """The account of `who` (provisioned if allowed) signed in: its session token."""
    async with res.pool.connection() as conn:
        user, provisioned = await account_for(conn, cfg, who)
        token, _ = await sessions.create_session(conn, user.id, console.session_ttl_s)
        await conn.commit()
    async with tenant_scope(res.pool, user.tenant_id) as scoped:
        if provisioned:
            await audit.audit(scoped, user, "user.create", f"user:{user.id}",
                              {"email": user.email, "role": user.role, "via": "oidc",
                               **who.audit_detail()})
        await audit.audit(scoped, user, "auth.sign_in", None, who.audit_detail())
    log.info("console.oidc_sign_in", user_id=user.id, tenant=user.tenant_id,
             subject=who.subject)
    return token


def _refused_page(request: Request, templates: Jinja2Templates, cfg: OIDCSettings,
                  exc: SignInRefused) -> Response:
    response = templates.TemplateResponse(
        request, "oidc_error.html",
        {"user": None, "csrf": "", "message": exc.message, "status": exc.status_code,
         "provider": cfg.provider_name}, status_code=exc.status_code)
    response.headers["Cache-Control"] = "no-store"
    response.delete_cookie(FLOW_COOKIE, path=START_PATH)
    return response


async def _audit_refusal(res: ConsoleResources, settings: Settings,
                         exc: SignInRefused) -> None:
    oidc = settings.console.oidc
    tenant = (exc.tenant or (oidc.tenant if oidc else None)
              or settings.console.platform_tenant or NO_TENANT)
    log.warning("console.oidc_sign_in_refused", reason=exc.reason, **exc.detail)
    async with tenant_scope(res.pool, tenant) as conn:
        await audit.audit_event(conn, tenant, None, exc.detail.get("email"),
                                "auth.sign_in_failed", None,
                                {**exc.detail, "reason": exc.reason})
