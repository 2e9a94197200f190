"""ONNX exports of the packaged MiniLM, made here from its weights and cached on disk.

Nothing is downloaded: the graph is traced from the model directory the package ships
(`torch.onnx.export`; optimum's exporter needs transformers < 4.58, this project runs 5.x),
and the int8 variant is onnxruntime's dynamic quantization of that graph. Each file lives
under `<cache_root>/<kind>/<model fingerprint>/model.onnx`, so new weights (or a new
export recipe) get a new file and an old one is never reused by mistake.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

ExportKind = Literal["onnx", "onnx-int8"]
# Bump when the export or quantization recipe changes: the cached files are keyed by it.
EXPORT_RECIPE = "1"
MAX_SEQ_LENGTH = 256  # the model's sentence_bert_config.json; the export takes any length
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
_WEIGHT_FILES = ("model.safetensors", "config.json", "tokenizer.json")


def model_fingerprint(model_path: Path) -> str:
    """sha256 over the files that decide the vectors: weights, config, tokenizer."""
    digest = hashlib.sha256(EXPORT_RECIPE.encode())
    for name in _WEIGHT_FILES:
        file = model_path / name
        if not file.exists():
            raise FileNotFoundError(f"embedding model: {file} is missing")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def exported_model(model_path: Path, cache_root: Path, kind: ExportKind,
                   fingerprint: str | None = None) -> Path:
    """The cached ONNX file of `kind`, exported (once, under a file lock: several workers
    may start together) when it is not there yet."""
    fingerprint = fingerprint or model_fingerprint(model_path)
    target = cache_root / kind / fingerprint[:16] / "model.onnx"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            if kind == "onnx":
                _export_fp32(model_path, target)
            else:
                fp32 = exported_model(model_path, cache_root, "onnx", fingerprint)
                _quantize_int8(fp32, target)
    return target


def _export_fp32(model_path: Path, target: Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    # Eager attention traces to one graph for every batch and length; SDPA's mask
    # shortcuts would be frozen at the traced shape.
    model = AutoModel.from_pretrained(str(model_path), attn_implementation="eager").eval()
    sample = tokenizer(["an alert", "a longer alert text for the trace"], padding=True,
                       truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt")
    dynamic = {name: {0: "batch", 1: "tokens"} for name in (*INPUT_NAMES, "last_hidden_state")}

    class LastHiddenState(torch.nn.Module):
        """The transformer with positional inputs and one output, as the graph has."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    token_type_ids: torch.Tensor) -> torch.Tensor:
            hidden: torch.Tensor = self.model(
                input_ids=input_ids, attention_mask=attention_mask,
                token_type_ids=token_type_ids).last_hidden_state
            return hidden

    with _atomic_path(target) as tmp, torch.no_grad():
        torch.onnx.export(LastHiddenState(), tuple(sample[n] for n in INPUT_NAMES),
                          str(tmp), input_names=list(INPUT_NAMES),
                          output_names=["last_hidden_state"], dynamic_axes=dynamic,
                          opset_version=17, dynamo=False)


def _quantize_int8(source: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel int8 weights of the MatMuls only: per-tensor weights of every op moved
    # the vectors to a cosine of 0.90 with the float model; this keeps it near 0.99.
    with _atomic_path(target) as tmp:
        quantize_dynamic(str(source), str(tmp), weight_type=QuantType.QInt8,
                         per_channel=True, op_types_to_quantize=["MatMul"])


@contextmanager
def _atomic_path(target: Path) -> Iterator[Path]:
    """A temporary file beside `target`, renamed onto it only when the block succeeds
    (a worker killed mid-export leaves no half-written model behind)."""
    fd, name = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
