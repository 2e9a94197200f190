"""API key format and HMAC verification; month arithmetic of usage partitions."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.config import GatewaySettings, Settings, UsageSettings
from pipeline.store.apikeys import StoredKey, hash_key, load_pepper, new_key, parse_key_id, verify
from pipeline.store.usage_partitions import month_start, partition_name

PEPPER = b"p" * 40


def test_new_keys_parse_to_their_id_and_verify() -> None:
    key_id, key = new_key()
    assert key.startswith(f"sak_{key_id}_") and parse_key_id(key) == key_id
    stored = StoredKey("acme", hash_key(PEPPER, key), revoked=False)
    assert verify(PEPPER, key, stored) == "acme"
    assert verify(b"q" * 40, key, stored) is None  # another pepper
    assert verify(PEPPER, key[:-1] + ("A" if key[-1] != "A" else "B"), stored) is None
    assert verify(PEPPER, key, StoredKey("acme", stored.key_hash, revoked=True)) is None
    assert verify(PEPPER, key, None) is None
    assert new_key()[1] != key


@pytest.mark.parametrize("garbage", ["", "sak", "sak__x", "sk_0123456789ab_" + "x" * 43,
                                     "sak_0123456789AB_" + "x" * 43, "sak_0123_" + "x" * 43,
                                     "sak_0123456789ab_short"])
def test_malformed_keys_have_no_id(garbage: str) -> None:
    assert parse_key_id(garbage) is None


def test_pepper_is_created_once_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path)
    first = load_pepper(settings)
    path = tmp_path / "gateway" / "api-key-pepper"
    assert path.stat().st_mode & 0o777 == 0o600
    assert load_pepper(settings) == first and len(first) >= 32
    configured = Settings(state_dir=tmp_path,
                          gateway=GatewaySettings(api_key_pepper="z" * 32))  # type: ignore[arg-type]
    assert load_pepper(configured) == b"z" * 32


def test_settings_refuse_a_weak_pepper_and_pricing_without_default() -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(api_key_pepper="short")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        UsageSettings(pricing={"m": {"input_per_million": 1, "output_per_million": 2}})  # type: ignore[dict-item]


def test_month_arithmetic_crosses_years() -> None:
    moment = datetime(2026, 11, 28, 23, 59, tzinfo=UTC)
    assert month_start(moment) == datetime(2026, 11, 1, tzinfo=UTC)
    assert month_start(moment, 2) == datetime(2027, 1, 1, tzinfo=UTC)
    assert month_start(moment, -11) == datetime(2025, 12, 1, tzinfo=UTC)
    assert partition_name(month_start(moment, 2)) == "llm_usage_events_p2027_01"
