"""The router's own configuration: what a program that embeds the router tells it.

Nothing here knows where the values come from. An application maps its settings onto
these types in one place (secanalyst: `pipeline/router_settings.py`), so the router can
be built, used and tested without that application.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from pipeline.router.dispatch import RELAY_GATHER_MAX_S, RELAY_GATHER_S
from pipeline.router.scoring.params import AffinityParams, ScrapeParams

Priority = Literal["premium", "standard", "batch"]

# Scorer name → weight (scoring/registry.py); the best Σ weight × score wins.
DEFAULT_SCORER_WEIGHTS: dict[str, float] = {
    "queue": 1.0, "running": 0.5, "kv-cache": 0.5, "in-flight": 2.0, "prefix-affinity": 2.0,
    "ttft": 8.0, "recent-requests": 1.0}


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PoolConfig(_Config):
    """One pool of OpenAI-compatible replicas (base URLs ending in `/v1`)."""

    endpoints: list[str]
    max_context_tokens: int = Field(default=4096, gt=0)
    # The replicas run vLLM's `--scheduling-policy priority`: requests carry their class.
    priority_scheduling: bool = False
    # "static": `endpoints` as listed; "dns": one headless Service URL re-resolved every
    # `refresh_s` into one replica per address (discovery.py, membership.py).
    discovery: Literal["static", "dns"] = "static"
    refresh_s: float = Field(default=5.0, gt=0)
    # Model rollout (rollout.py): endpoint URL → the model version it serves (its vLLM
    # `--served-model-name`; unlisted: the router's `model_name`), and the share of
    # requests per version (empty: any replica takes any request). Changed at run time
    # with `Router.set_traffic_split`.
    models: dict[str, str] = Field(default_factory=dict)
    traffic_split: dict[str, float] = Field(default_factory=dict)
    # Every request of a tenant to the same version (else each request draws anew).
    sticky_versions: bool = False
    # A relayed stream (`Router.relay`) is read at most every `relay_gather_s` after its
    # first text, the interval doubling with each read up to `relay_gather_max_s`: what
    # came meanwhile goes on as one piece (dispatch.py). 0: every piece as it comes.
    relay_gather_s: float = Field(default=RELAY_GATHER_S, ge=0)
    relay_gather_max_s: float = Field(default=RELAY_GATHER_MAX_S, ge=0)

    @model_validator(mode="after")
    def _one_service_for_dns(self) -> PoolConfig:
        if self.discovery == "dns" and len(self.endpoints) != 1:
            raise ValueError("discovery 'dns' takes exactly one endpoint: the headless "
                             "Service's URL")
        return self

    @model_validator(mode="after")
    def _split_of_known_versions(self) -> PoolConfig:
        unknown = set(self.models) - set(self.endpoints)
        if unknown:
            raise ValueError(f"models given for URLs not in endpoints: {sorted(unknown)}")
        if any(w < 0 for w in self.traffic_split.values()) or (
                self.traffic_split and not any(w > 0 for w in self.traffic_split.values())):
            raise ValueError("traffic_split weights must be >= 0 with one > 0")
        return self


class TenantQuota(_Config):
    """One tenant's limits (unset: the defaults') and admission class."""

    tokens_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_day: int | None = Field(default=None, gt=0)
    priority: Priority = "standard"


class TenantLimits(_Config):
    """Every tenant's token quota, with per-tenant overrides by tenant id."""

    tokens_per_minute: int = Field(default=200_000, gt=0)
    tokens_per_day: int = Field(default=20_000_000, gt=0)
    overrides: dict[str, TenantQuota] = Field(default_factory=dict)


class AdmissionConfig(_Config):
    """Per-replica dispatch slots and the bounded queue in front of them (admission.py)."""

    max_in_flight_per_replica: int = Field(default=16, ge=1)
    max_queue: int = Field(default=256, ge=0)
    max_wait_s: float = Field(default=30.0, gt=0)
    # Token-aware admission (None: off).
    max_prefill_tokens_per_replica: int | None = Field(default=None, ge=1)
    # With quotas in Redis (QuotaBackend.redis_url), the limits above are for all the
    # router processes together: each counts the others there (heartbeats every
    # `peers_heartbeat_s`, peers.py) and applies its share (Admission.set_share).
    split_between_routers: bool = True
    peers_heartbeat_s: float = Field(default=5.0, gt=0)


class QuotaBackend(_Config):
    """Where quotas live: Redis when `redis_url` is set (shared by every router process),
    else in this process's memory."""

    redis_url: str | None = None
    key_prefix: str = "secanalyst:quota"


class ScoringConfig(_Config):
    """Replica choice (scoring/): scorer weights (0 = off), each scorer's raw parameters
    (validated by the scorer's own parameter model), the prefix memory and the scrape."""

    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_SCORER_WEIGHTS))
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    affinity: AffinityParams = AffinityParams()
    scrape: ScrapeParams = ScrapeParams()


class RouterConfig(_Config):
    """Everything `build_router` needs besides a token counter and a usage sink."""

    model_name: str
    pools: dict[str, PoolConfig] = Field(min_length=1)
    tenants: TenantLimits = TenantLimits()
    admission: AdmissionConfig = AdmissionConfig()
    quota: QuotaBackend = QuotaBackend()
    scoring: ScoringConfig = ScoringConfig()
    connect_timeout_s: float = Field(default=5.0, gt=0)
    request_timeout_s: float = Field(default=120.0, gt=0)
