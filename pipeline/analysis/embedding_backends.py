"""The engines that run the MiniLM: PyTorch (sentence-transformers), ONNX Runtime (float or
int8) and OpenVINO, chosen by `embedding.backend`.

All produce what sentence-transformers produces for this model — tokens (stripped text,
truncated at 256), the mean of the token vectors under the attention mask, unit length —
so the float32 engines' vectors agree with PyTorch's to a cosine of ~1.0. bfloat16 (where
the CPU has it; OpenVINO's own default there) moves them a little (cosine ≈ 0.99998) and
int8 more (≈ 0.99): each is its own space, see `compatible`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np
import structlog

from pipeline.analysis.embedding_export import (
    MAX_SEQ_LENGTH,
    exported_model,
    model_fingerprint,
)

log = structlog.get_logger(__name__)

EmbeddingBackend = Literal["torch", "onnx", "onnx-int8", "openvino", "openvino-bf16"]
BACKENDS: tuple[str, ...] = get_args(EmbeddingBackend)
# Backends whose vectors are interchangeable (float32 arithmetic on the same weights):
# switching among them keeps stored vectors; any other switch re-embeds.
_PRECISION = {"torch": "fp32", "onnx": "fp32", "openvino": "fp32", "onnx-int8": "int8",
              "openvino-bf16": "bf16"}


def compatible(backend_a: str, backend_b: str) -> bool:
    return _PRECISION.get(backend_a, backend_a) == _PRECISION.get(backend_b, backend_b)


class Encoder(Protocol):
    backend: str

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray: ...


class TorchEncoder:
    backend = "torch"

    def __init__(self, model_path: Path, threads: int = 0) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            torch.set_num_threads(threads)  # process-wide: torch runs only this model here

        self._model = SentenceTransformer(str(model_path), device="cpu")

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        return np.asarray(self._model.encode(list(texts), batch_size=batch_size,
                                             normalize_embeddings=True,
                                             convert_to_numpy=True,
                                             show_progress_bar=False), dtype=np.float32)


RunGraph = Callable[[dict[str, np.ndarray]], np.ndarray]


class GraphEncoder:
    """Tokenize, run an exported graph (token vectors out), mean-pool, normalize."""

    def __init__(self, backend: str, model_path: Path, run: RunGraph) -> None:
        from transformers import AutoTokenizer

        self.backend = backend
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_path))
        self._run = run
        self._pad_id = int(self._tokenizer.pad_token_id or 0)
        config = json.loads((model_path / "config.json").read_text())
        self._dimensions = int(config["hidden_size"])

    def encode(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        if not texts:
            return np.empty((0, self._dimensions), dtype=np.float32)
        ids: list[list[int]] = self._tokenizer(
            [t.strip() for t in texts], truncation="longest_first",
            max_length=MAX_SEQ_LENGTH)["input_ids"]
        out = np.empty((len(texts), self._dimensions), dtype=np.float32)
        for rows in length_batches([len(i) for i in ids], batch_size):
            out[rows] = self._encode_batch([ids[i] for i in rows])
        return out

    def _encode_batch(self, ids: list[list[int]]) -> np.ndarray:
        longest = max(len(i) for i in ids)
        input_ids = np.full((len(ids), longest), self._pad_id, dtype=np.int64)
        attention = np.zeros((len(ids), longest), dtype=np.int64)
        for row, tokens in enumerate(ids):
            input_ids[row, :len(tokens)] = tokens
            attention[row, :len(tokens)] = 1
        hidden = self._run({"input_ids": input_ids, "attention_mask": attention,
                            "token_type_ids": np.zeros_like(input_ids)})
        mask = attention[..., None].astype(np.float32)
        pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        normalized: np.ndarray = (pooled / norms).astype(np.float32)
        return normalized


# How much longer than the shortest text of a batch its longest may be (in tokens): every
# text is padded to the longest, and the model's work grows with the padded length.
PADDING_SLACK = 1.5


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of `lengths` in batches of at most `batch_size`, longest first, a batch
    ending where the next text is under 1/PADDING_SLACK of its longest. A Kafka batch of
    mixed alerts (50 to 256 tokens) padded as one batch costs twice the model's time per
    text (docs/benchmarks.md, issue 15); a few more, smaller calls cost far less."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        current = batches[-1] if batches else None
        if (current is None or len(current) >= batch_size
                or lengths[i] * PADDING_SLACK < lengths[current[0]]):
            batches.append([i])
        else:
            current.append(i)
    return batches


def _onnxruntime_runner(graph: Path, threads: int) -> RunGraph:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # 0: one per core
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    return lambda feeds: np.asarray(session.run(None, feeds)[0])


def _openvino_runner(graph: Path, precision: str, threads: int) -> RunGraph:
    import openvino as ov

    core = ov.Core()
    # LATENCY: one batch at a time on all cores, as the embed stage calls it. The precision
    # is explicit: OpenVINO would pick bf16 by itself on a CPU that has it.
    compiled = core.compile_model(core.read_model(str(graph)), "CPU",
                                  {"PERFORMANCE_HINT": "LATENCY",
                                   "INFERENCE_PRECISION_HINT": precision,
                                   "INFERENCE_NUM_THREADS": threads})  # 0: one per core
    request = compiled.create_infer_request()

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        return np.array(request.infer(feeds)[0])  # a copy: the request reuses its buffer

    return run


def open_encoder(backend: str, model_path: Path, cache_root: Path,
                 fingerprint: str | None = None, threads: int = 0) -> Encoder:
    """The engine for `backend`; ONNX graphs are exported from `model_path` into
    `cache_root` the first time (PyTorch is needed then, not afterwards)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if backend == "torch":
        return TorchEncoder(model_path, threads)
    if backend not in BACKENDS:
        raise ValueError(f"embedding.backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    fingerprint = fingerprint or model_fingerprint(model_path)
    if backend == "onnx-int8":
        graph = exported_model(model_path, cache_root, "onnx-int8", fingerprint)
        return GraphEncoder(backend, model_path, _onnxruntime_runner(graph, threads))
    graph = exported_model(model_path, cache_root, "onnx", fingerprint)
    if backend == "onnx":
        return GraphEncoder(backend, model_path, _onnxruntime_runner(graph, threads))
    precision = "bf16" if backend == "openvino-bf16" else "f32"
    if precision == "bf16" and not native_bf16(cpu_flags()):
        log.warning("embedding_bf16_emulated", backend=backend,
                    advice="this CPU has no bf16 instructions (AVX512_BF16 or AMX): "
                           "embedding.backend=openvino (f32) was ~12% faster on such a CPU "
                           "(docs/benchmarks.md, Embedding backends); switching re-embeds "
                           "the runbooks once")
    return GraphEncoder(backend, model_path, _openvino_runner(graph, precision, threads))


def cpu_flags() -> set[str]:
    """The first CPU's feature flags (/proc/cpuinfo); empty where there is none."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def native_bf16(flags: set[str]) -> bool:
    """Whether the CPU computes bfloat16 itself (else OpenVINO emulates it, slower than
    f32: 1.43× against 1.60× PyTorch's rate on an AVX2 EPYC). Unknown flags: assume yes."""
    return not flags or bool(flags & {"avx512_bf16", "amx_bf16"})
