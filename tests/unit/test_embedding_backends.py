"""The embedding engine is chosen by `embedding.backend`, and the exported engines' vectors
agree with sentence-transformers on PyTorch (issue 15).

Real model (the packaged MiniLM), real export: the ONNX graph is made once into
<cache_dir>/embeddings/onnx/<fingerprint>/ (~15 s the first time on this machine, reused
afterwards), as the embed stage does it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.analysis.embedding import Embedder, default_export_dir, model_id
from pipeline.analysis.embedding_backends import (
    PADDING_SLACK,
    GraphEncoder,
    TorchEncoder,
    length_batches,
    open_encoder,
)
from pipeline.analysis.runbook_loader import needs_embedding
from pipeline.analysis.runbooks import load_chunks
from pipeline.config import Settings
from pipeline.store.runbooks import StoredChunk

ROOT = Path(__file__).parents[2]
TEXTS = [
    "Wazuh rule 5712 (level 10): sshd: brute force trying to get access to the system.\n"
    "groups: syslog, sshd, authentication_failures\n"
    "Dec  2 01:02:03 web-01 sshd[4242]: Failed password for invalid user admin from "
    "198.51.100.7 port 52211 ssh2",
    "Wazuh rule 550 (level 7): Integrity checksum changed.\ngroups: ossec, syscheck\n"
    "File '/etc/passwd' modified",
    "Wazuh rule 87105 (level 12): VirusTotal: Alert - /tmp/x.elf - 17 engines detected "
    "this file",
    "  short text with spaces  ",
]


@pytest.fixture(scope="module")
def export_dir() -> Path:
    return default_export_dir(Settings().cache_dir)


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return Embedder(backend="torch").embed_uncached(TEXTS)


def test_the_setting_selects_the_engine(monkeypatch: pytest.MonkeyPatch,
                                        export_dir: Path) -> None:
    monkeypatch.setenv("SECANALYST_EMBEDDING__BACKEND", "openvino")
    settings = Settings()
    assert settings.embedding.backend == "openvino"
    embedder = Embedder.from_settings(settings)
    assert embedder.backend == "openvino"
    assert isinstance(embedder._model, GraphEncoder) and embedder._model.backend == "openvino"
    assert (default_export_dir(settings.cache_dir) / "onnx").is_dir()  # exported locally
    monkeypatch.setenv("SECANALYST_EMBEDDING__BACKEND", "torch")
    assert isinstance(Embedder.from_settings(Settings())._model, TorchEncoder)


def test_an_unknown_backend_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                             export_dir: Path) -> None:
    monkeypatch.setenv("SECANALYST_EMBEDDING__BACKEND", "tensorrt")
    with pytest.raises(ValidationError, match=r"embedding\.backend"):
        Settings()
    with pytest.raises(ValueError, match="'tensorrt': expected one of torch, onnx"):
        open_encoder("tensorrt", Path("unused"), export_dir)


@pytest.mark.parametrize("backend", ["onnx", "openvino", "openvino-bf16"])
def test_exported_vectors_agree_with_torch(backend: str, export_dir: Path,
                                           torch_vectors: np.ndarray) -> None:
    embedder = Embedder(backend=backend, export_dir=export_dir)
    vectors = embedder.embed_uncached(TEXTS)
    assert vectors.shape == torch_vectors.shape == (len(TEXTS), 384)
    assert vectors.dtype == np.float32
    cosine = (vectors * torch_vectors).sum(axis=1)
    assert cosine.min() >= 0.99, cosine
    # Batching (padding to the batch's longest text) does not change a text's vector.
    one_at_a_time = np.stack([embedder.embed_uncached([t])[0] for t in TEXTS])
    assert ((one_at_a_time * vectors).sum(axis=1) >= 0.9999).all()


def test_runbooks_are_re_embedded_only_on_an_incompatible_change() -> None:
    chunk = load_chunks(ROOT / "runbooks")[0]
    current = model_id()
    stored = StoredChunk(chunk.sha256, current, "torch")
    assert not needs_embedding(chunk, stored, current, "torch")
    # float engines on the same weights: interchangeable vectors, kept
    assert not needs_embedding(chunk, stored, current, "openvino")
    assert not needs_embedding(chunk, stored, current, "onnx")
    # int8 and bf16 vectors are other spaces; other weights too; unknown (before 0012)
    assert needs_embedding(chunk, stored, current, "onnx-int8")
    assert needs_embedding(chunk, stored, current, "openvino-bf16")
    assert not needs_embedding(chunk, StoredChunk(chunk.sha256, current, "openvino-bf16"),
                               current, "openvino-bf16")
    assert needs_embedding(chunk, StoredChunk(chunk.sha256, "other@0123", "torch"),
                           current, "torch")
    assert needs_embedding(chunk, StoredChunk(chunk.sha256, "", ""), current, "torch")
    assert needs_embedding(chunk, StoredChunk("changed", current, "torch"), current, "torch")
    assert needs_embedding(chunk, None, current, "torch")


def test_texts_are_batched_by_token_length() -> None:
    lengths = [60, 256, 70, 250, 100, 64, 200, 58, 61, 59]
    batches = length_batches(lengths, batch_size=3)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert 1 <= len(batch) <= 3
        longest = lengths[batch[0]]
        assert all(lengths[i] <= longest for i in batch)  # longest first
        assert all(lengths[i] * PADDING_SLACK >= longest for i in batch)
    assert batches[0] == [1, 3, 6]  # 256, 250, 200: within the slack
    assert length_batches([], batch_size=8) == []


def test_one_thread_and_mixed_lengths_give_the_same_vectors(export_dir: Path,
                                                            torch_vectors: np.ndarray) -> None:
    # A short and a long text in one call are encoded in separate batches (no padding of
    # the short one to the long one's length): each row is still its own text's vector.
    embedder = Embedder(backend="openvino", export_dir=export_dir, threads=1)
    long_text = TEXTS[0] + "\n" + " ".join(f"field{n}=value{n}" for n in range(150))
    vectors = embedder.embed_uncached([long_text, *TEXTS])
    cosine = (vectors[1:] * torch_vectors).sum(axis=1)
    assert cosine.min() >= 0.999, cosine
    alone = embedder.embed_uncached([long_text])[0]
    assert float(alone @ vectors[0]) >= 0.9999


def test_bf16_is_native_only_with_avx512_bf16_or_amx() -> None:
    from pipeline.analysis.embedding_backends import native_bf16

    assert not native_bf16({"avx2", "fma", "avx512f"})
    assert native_bf16({"avx2", "avx512f", "avx512_bf16"})
    assert native_bf16({"avx2", "amx_bf16", "amx_tile"})
    assert native_bf16(set())  # no /proc/cpuinfo: no warning


def test_a_graph_exported_ahead_is_used_where_embedding_export_dir_says(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, export_dir: Path) -> None:
    """`secanalyst model export-embedding` at image build fills embedding.export_dir; a
    stage started with the same setting finds the graph there and exports nothing."""
    from typer.testing import CliRunner

    from pipeline.cli.app import app

    baked = tmp_path / "baked"
    # The command's logging setup is global and caches loggers: kept out of the suite.
    monkeypatch.setattr("pipeline.cli.preflight.configure_logging", lambda *_, **__: None)
    monkeypatch.setenv("SECANALYST_EMBEDDING__BACKEND", "openvino")
    monkeypatch.setenv("SECANALYST_EMBEDDING__EXPORT_DIR", str(baked))
    monkeypatch.setenv("SECANALYST_CACHE_DIR", str(tmp_path / "cache"))
    settings = Settings()
    assert settings.embedding.export_dir == baked
    # The graph as the build made it (copied from this machine's export: no 15 s export).
    Embedder(backend="openvino", export_dir=export_dir)
    shutil.copytree(export_dir / "onnx", baked / "onnx")
    graphs = sorted(baked.rglob("model.onnx"))
    made = {g: g.stat().st_mtime_ns for g in graphs}

    result = CliRunner().invoke(app, ["model", "export-embedding"])
    assert result.exit_code == 0, result.output
    assert "embedding engine ready: openvino" in result.output
    assert str(baked) in result.output.replace("\n", "")
    embedder = Embedder.from_settings(settings)
    assert embedder.embed(TEXTS[:1]).shape == (1, 384)
    assert {g: g.stat().st_mtime_ns for g in baked.rglob("model.onnx")} == made  # reused
    assert not (tmp_path / "cache").exists()  # nothing exported under cache_dir
