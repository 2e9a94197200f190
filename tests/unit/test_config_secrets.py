"""Secrets from files (`SECANALYST_SECRETS_DIR`, docker-compose's `secrets:` mounted under
/run/secrets): one file per setting, named like its environment variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsError

from pipeline.config import Settings

PEPPER = "p" * 40


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir()
    monkeypatch.setenv("SECANALYST_SECRETS_DIR", str(folder))
    monkeypatch.setenv("SECANALYST_CONFIG_FILE", str(tmp_path / "absent.toml"))
    for name in ("SECANALYST_DATABASE__URL", "SECANALYST_GATEWAY__API_KEY_PEPPER",
                 "SECANALYST_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    return folder


def test_nested_and_top_level_settings_are_read_from_their_files(secrets: Path) -> None:
    (secrets / "SECANALYST_DATABASE__URL").write_text(
        "postgresql://secanalyst:s3cret@postgres:5432/secanalyst\n")  # editors add a newline
    (secrets / "SECANALYST_GATEWAY__API_KEY_PEPPER").write_text(PEPPER)
    (secrets / "SECANALYST_REDIS_URL").write_text("redis://:pw@redis:6379/0")
    (secrets / "postgres_password").write_text("another container's secret")  # not ours

    settings = Settings()

    assert settings.database_url == "postgresql://secanalyst:s3cret@postgres:5432/secanalyst"
    assert settings.gateway.api_key_pepper is not None
    assert settings.gateway.api_key_pepper.get_secret_value() == PEPPER
    assert settings.redis_url == "redis://:pw@redis:6379/0"
    assert "s3cret" not in repr(settings.database)  # still a SecretStr


def test_environment_wins_over_a_file_and_a_file_over_the_toml(
        secrets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "secanalyst.toml"
    toml.write_text('redis_url = "redis://from-toml:6379/0"\n'
                    '[database]\nurl = "postgresql://from-toml/x"\n')
    monkeypatch.setenv("SECANALYST_CONFIG_FILE", str(toml))
    (secrets / "SECANALYST_DATABASE__URL").write_text("postgresql://from-file/x")
    (secrets / "SECANALYST_REDIS_URL").write_text("redis://from-file:6379/0")
    monkeypatch.setenv("SECANALYST_REDIS_URL", "redis://from-env:6379/0")

    settings = Settings()

    assert settings.database_url == "postgresql://from-file/x"
    assert settings.redis_url == "redis://from-env:6379/0"


def test_a_secret_file_is_validated_like_any_value(secrets: Path) -> None:
    (secrets / "SECANALYST_GATEWAY__API_KEY_PEPPER").write_text("short")
    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings()


def test_a_missing_secrets_folder_is_an_error_not_silently_no_secrets(
        secrets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECANALYST_SECRETS_DIR", str(secrets / "nope"))
    with pytest.raises(SettingsError, match="does not exist"):
        Settings()


def test_without_the_variable_no_folder_is_read(
        secrets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (secrets / "SECANALYST_REDIS_URL").write_text("redis://from-file:6379/0")
    monkeypatch.delenv("SECANALYST_SECRETS_DIR")
    assert Settings().redis_url is None
