"""Settings of the review console (`secanalyst serve`) and its OIDC sign-in."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from pipeline.config.base import Frozen


class OIDCSettings(Frozen):
    """OpenID Connect sign-in to the console (authorization code + PKCE); set
    `[console.oidc]` or `SECANALYST_CONSOLE__OIDC__ISSUER` etc. to turn it on. The
    provider's redirect URI to register is `<redirect_base_url>/login/oidc/callback`."""

    provider_name: str = "single sign-on"  # the button says "Sign in with <provider_name>"
    issuer: str  # discovery at <issuer>/.well-known/openid-configuration
    client_id: str
    client_secret: SecretStr | None = None  # None: a public client (PKCE only)
    scopes: list[str] = Field(default_factory=lambda: ["openid", "email", "profile"])
    redirect_base_url: str  # the console's external URL, e.g. https://console.example.com
    # The tenant of a signed-in user: a claim that names it, or one fixed tenant (or
    # neither: the tenant of the existing account). When set, it must match the account's.
    tenant_claim: str | None = None
    tenant: str | None = None
    # Emails whose domain is not listed are refused (empty: any domain).
    allowed_email_domains: list[str] = Field(default_factory=list)
    # Off: only accounts made with `secanalyst users create` whose email matches the
    # verified email claim may sign in. On: an unknown user becomes an analyst of the
    # (existing) tenant named by tenant_claim / tenant.
    auto_provision: bool = False
    require_email_verified: bool = True
    http_timeout_s: float = Field(default=10.0, gt=0)
    clock_skew_s: int = Field(default=60, ge=0)

    @field_validator("issuer", "redirect_base_url")
    @classmethod
    def _https(cls, value: str) -> str:
        url = urlsplit(value)
        loopback = url.hostname in {"127.0.0.1", "::1", "localhost"}
        if url.scheme != "https" and not (url.scheme == "http" and loopback):
            raise ValueError("must be an https:// URL (http:// only on loopback)")
        return value  # the issuer is compared exactly (a trailing slash counts)

    @property
    def redirect_uri(self) -> str:
        return f"{self.redirect_base_url.rstrip('/')}/login/oidc/callback"

    @field_validator("scopes")
    @classmethod
    def _openid_scope(cls, value: list[str]) -> list[str]:
        if "openid" not in value:
            raise ValueError("console.oidc.scopes must include 'openid'")
        return value

    @field_validator("allowed_email_domains")
    @classmethod
    def _lower_domains(cls, value: list[str]) -> list[str]:
        return [d.strip().lower().lstrip("@") for d in value if d.strip()]

    @model_validator(mode="after")
    def _one_tenant_source(self) -> OIDCSettings:
        if self.tenant_claim and self.tenant:
            raise ValueError("console.oidc: set tenant_claim or tenant, not both")
        if self.auto_provision and not (self.tenant_claim or self.tenant):
            raise ValueError("console.oidc.auto_provision needs tenant_claim or tenant")
        return self


class ConsoleSettings(Frozen):
    """The review console (`secanalyst serve`)."""

    host: str = "127.0.0.1"
    port: int = 8090
    session_ttl_s: float = Field(default=8 * 3600, gt=0)
    # Secure cookies are only sent over HTTPS (and to http://localhost by browsers);
    # turn off only behind a trusted plain-HTTP hop.
    cookie_secure: bool = True
    page_size: int = Field(default=50, ge=1, le=500)
    poll_interval_s: float = Field(default=5.0, gt=0)
    # Sign-in throttling per account: after this many failures within the window, even
    # the right password is refused until the window has passed.
    max_failed_sign_ins: int = Field(default=10, ge=1)
    failed_sign_in_window_s: float = Field(default=900.0, gt=0)
    # Admins of this tenant (the platform team) see LLM usage of every tenant; other
    # admins see their own tenant's. None: nobody sees across tenants.
    platform_tenant: str | None = None
    # OpenID Connect sign-in besides passwords (None: off); see OIDCSettings.
    oidc: OIDCSettings | None = None
    # The Wazuh dashboard's page of one alert, with {alert_id} and {agent} filled in (e.g.
    # "https://wazuh.example/app/threat-hunting#/overview/?_q=id:{alert_id}"); None: no link.
    wazuh_dashboard_url: str | None = None
    # A verdict's related alerts (same agent, source address or user): this far either side.
    related_window_s: float = Field(default=3600.0, gt=0, le=7 * 86400)
