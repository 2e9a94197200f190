"""Settings of tenants and their traffic: quotas, usage metering and prices, the LLM
gateway and the alert ingest server."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from pipeline.config.base import Frozen


class TenantQuota(Frozen):
    """One tenant's limits; a limit left unset is the default's."""

    tokens_per_minute: int | None = Field(default=None, gt=0)
    tokens_per_day: int | None = Field(default=None, gt=0)
    # Admission class when replicas are saturated: premium > standard > batch.
    priority: Literal["premium", "standard", "batch"] = "standard"


class TenantDefaults(Frozen):
    default_tenant: str = "default"
    tokens_per_minute: int = Field(default=200_000, gt=0)
    tokens_per_day: int = Field(default=20_000_000, gt=0)
    # Per-tenant limits and class, by tenant id (e.g. `[tenants.overrides.acme]`).
    overrides: dict[str, TenantQuota] = Field(default_factory=dict)


class ModelPrice(Frozen):
    """Estimated price of one model, in currency units per million tokens."""

    input_per_million: float = Field(ge=0)
    output_per_million: float = Field(ge=0)


class UsageSettings(Frozen):
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


class GatewaySettings(Frozen):
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


class IngestSettings(Frozen):
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
    # Codec of the backfill's record batches (every consumer reads it: aiokafka[zstd]).
    # zstd cut the S3-backed broker's CPU per alert ~2.5x (fewer bytes through Tansu
    # and SeaweedFS) for ~2 µs of the replay's; lz4 is aiokafka's level 9, slower here.
    backfill_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "zstd"
    default_input_tokens_per_verdict: int = Field(default=900, ge=0)
    default_output_tokens_per_verdict: int = Field(default=250, ge=0)
    # `backfill` asks for confirmation when the estimate costs more than this.
    confirm_above_cost: float = Field(default=1.0, ge=0)
    tail_poll_s: float = Field(default=0.5, gt=0)
    # Verdict write-back into Wazuh 4.x (`secanalyst wazuh-writeback`): the tenants whose
    # verdicts are written to the manager's queue socket, and that socket.
    writeback_tenants: list[str] = Field(default_factory=list)
    wazuh_queue_socket: Path = Path("/var/ossec/queue/sockets/queue")
