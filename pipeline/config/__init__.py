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
from typing import Literal

from platformdirs import user_cache_dir
from pydantic import field_validator
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

# Every section, re-exported here: `from pipeline.config import KafkaSettings` is the
# one way to import a setting type.
from pipeline.config.console import ConsoleSettings, OIDCSettings
from pipeline.config.llm import (
    DEFAULT_MODEL_NAME,
    EmbeddingSettings,
    LLMPool,
    LLMSettings,
    RetrievalSettings,
    StormSettings,
)
from pipeline.config.processes import DevStackSettings, WorkerSettings
from pipeline.config.services import BatchLaneSettings, DatabaseSettings, KafkaSettings, Topics
from pipeline.config.tenants import (
    GatewaySettings,
    IngestSettings,
    ModelPrice,
    TenantDefaults,
    TenantQuota,
    UsageSettings,
)

__all__ = [
    "DEFAULT_MODEL_NAME", "BatchLaneSettings", "ConsoleSettings", "DatabaseSettings",
    "DevStackSettings", "EmbeddingSettings", "GatewaySettings", "IngestSettings",
    "KafkaSettings", "LLMPool", "LLMSettings", "ModelPrice", "OIDCSettings",
    "RetrievalSettings", "Settings", "StormSettings", "TenantDefaults", "TenantQuota",
    "Topics", "UsageSettings", "WorkerSettings", "config_file", "load_settings",
    "secrets_dir",
]


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
