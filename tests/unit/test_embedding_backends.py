"""The embedding engine is chosen by `embedding.backend`, and the exported engines' vectors
agree with sentence-transformers on PyTorch (issue 15).

Real model (the packaged MiniLM), real export: the ONNX graph is made once into
<cache_dir>/embeddings/onnx/<fingerprint>/ (~15 s the first time on this machine, reused
afterwards), as the embed stage does it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.analysis.embedding import Embedder, default_export_dir, model_id
from pipeline.analysis.embedding_backends import GraphEncoder, TorchEncoder, open_encoder
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
