"""Convert a llama-architecture GGUF (e.g. SmolLM2-135M-Instruct) into a Hugging Face model dir.

Standalone on purpose: it runs under the vLLM virtualenv's python, where this project is not
installed, so it imports nothing from the project. Dependencies: gguf, numpy, torch,
safetensors, transformers.

    python gguf_to_hf.py --gguf SmolLM2-135M-Instruct.Q4_1.gguf --out DIR

The result is written into a temporary sibling directory and renamed onto DIR at the very end,
with a ``.complete`` marker inside, so a half-finished conversion is never taken as cached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

MARKER = ".complete"

# SmolLM2-Instruct's ChatML template (used only when the GGUF carries none).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, "
    "trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_LAYER_MAP = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GLOBAL_MAP = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_BLK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.weight$")


class ConversionError(Exception):
    pass


def log(msg: str) -> None:
    print(f"[convert] {msg}", flush=True)


def field_value(reader: Any, key: str) -> Any:
    """Return a GGUF metadata value as a Python scalar/str/list, or None if absent."""
    import gguf

    field = reader.fields.get(key)
    if field is None:
        return None
    if hasattr(field, "contents"):
        return field.contents()
    # Older gguf versions: decode by hand.
    types = list(field.types)
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.ARRAY:
        if len(types) > 1 and types[1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8") for i in field.data]
        return [field.parts[i].tolist()[0] for i in field.data]
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[field.data[0]]).decode("utf-8")
    return field.parts[field.data[0]].tolist()[0]


def require(reader: Any, key: str) -> Any:
    value = field_value(reader, key)
    if value is None:
        raise ConversionError(f"GGUF metadata key {key!r} is missing")
    return value


def hf_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_MAP:
        return _GLOBAL_MAP[gguf_name]
    m = _BLK_RE.match(gguf_name)
    if m and m.group(2) in _LAYER_MAP:
        return f"model.layers.{m.group(1)}.{_LAYER_MAP[m.group(2)]}.weight"
    raise ConversionError(f"unknown GGUF tensor name {gguf_name!r}")


def unpermute(w: Any, n_head: int) -> Any:
    """Undo llama.cpp's rotary (interleaved -> half-split) permutation of q/k weights."""
    rows = w.shape[0]
    if rows % (n_head * 2):
        raise ConversionError(f"cannot unpermute rows={rows} with n_head={n_head}")
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def read_config(reader: Any) -> dict[str, Any]:
    arch = require(reader, "general.architecture")
    if arch != "llama":
        raise ConversionError(f"only llama-architecture GGUFs are supported, got {arch!r}")
    tokens = field_value(reader, "tokenizer.ggml.tokens")
    vocab_size = field_value(reader, "llama.vocab_size") or (len(tokens) if tokens else None)
    if vocab_size is None:
        raise ConversionError("cannot determine vocab size from GGUF metadata")
    hidden = int(require(reader, "llama.embedding_length"))
    n_head = int(require(reader, "llama.attention.head_count"))
    n_kv = int(field_value(reader, "llama.attention.head_count_kv") or n_head)
    rope_dim = field_value(reader, "llama.rope.dimension_count")
    head_dim = int(rope_dim) if rope_dim else hidden // n_head
    bos = field_value(reader, "tokenizer.ggml.bos_token_id")
    eos = field_value(reader, "tokenizer.ggml.eos_token_id")
    pad = field_value(reader, "tokenizer.ggml.padding_token_id")
    cfg: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "num_hidden_layers": int(require(reader, "llama.block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": n_kv,
        "head_dim": head_dim,
        "intermediate_size": int(require(reader, "llama.feed_forward_length")),
        "max_position_embeddings": int(require(reader, "llama.context_length")),
        "rope_theta": float(field_value(reader, "llama.rope.freq_base") or 10000.0),
        "rms_norm_eps": float(require(reader, "llama.attention.layer_norm_rms_epsilon")),
        "vocab_size": int(vocab_size),
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "pretraining_tp": 1,
        "rope_scaling": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }
    if bos is not None:
        cfg["bos_token_id"] = int(bos)
    if eos is not None:
        cfg["eos_token_id"] = int(eos)
    if pad is not None:
        cfg["pad_token_id"] = int(pad)
    return cfg


def convert_tensors(reader: Any, cfg: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch
    from gguf.quants import dequantize

    n_head = cfg["num_attention_heads"]
    n_kv = cfg["num_key_value_heads"]
    hidden = cfg["hidden_size"]
    expected = {
        "model.embed_tokens.weight": (cfg["vocab_size"], hidden),
        "model.norm.weight": (hidden,),
    }
    q_rows = n_head * cfg["head_dim"]
    kv_rows = n_kv * cfg["head_dim"]
    inter = cfg["intermediate_size"]
    layer_shapes = {
        "self_attn.q_proj": (q_rows, hidden),
        "self_attn.k_proj": (kv_rows, hidden),
        "self_attn.v_proj": (kv_rows, hidden),
        "self_attn.o_proj": (hidden, q_rows),
        "mlp.gate_proj": (inter, hidden),
        "mlp.up_proj": (inter, hidden),
        "mlp.down_proj": (hidden, inter),
        "input_layernorm": (hidden,),
        "post_attention_layernorm": (hidden,),
    }
    for i in range(cfg["num_hidden_layers"]):
        for suffix, shape in layer_shapes.items():
            expected[f"model.layers.{i}.{suffix}.weight"] = shape

    total = len(reader.tensors)
    step = max(1, total // 10)
    out: dict[str, Any] = {}
    for n, t in enumerate(reader.tensors, start=1):
        name = hf_name(t.name)
        # GGUF lists dims innermost-first; numpy/torch want them outermost-first.
        shape = tuple(int(d) for d in reversed(list(t.shape)))
        arr = dequantize(t.data, t.tensor_type)
        arr = np.asarray(arr, dtype=np.float32).reshape(shape)
        if name == "lm_head.weight":
            log("note: GGUF has a separate output.weight; keeping it (untied)")
            cfg["tie_word_embeddings"] = False
            expected[name] = (cfg["vocab_size"], hidden)
        want = expected.get(name)
        if want is None:
            raise ConversionError(f"unexpected tensor {t.name} -> {name}")
        if shape != want:
            raise ConversionError(f"{t.name}: shape {shape} != expected {want}")
        if name.endswith("self_attn.q_proj.weight"):
            arr = unpermute(arr, n_head)
        elif name.endswith("self_attn.k_proj.weight"):
            arr = unpermute(arr, n_kv)
        out[name] = torch.from_numpy(np.array(arr, dtype=np.float32, order="C")).to(torch.bfloat16)
        if n % step == 0 or n == total:
            log(f"{n}/{total} tensors")
    missing = sorted(set(expected) - set(out))
    if missing:
        more = "..." if len(missing) > 5 else ""
        raise ConversionError(f"GGUF lacks tensors: {missing[:5]}{more}")
    return out


def save_tokenizer(gguf_path: Path, tmp: Path, reader: Any, context_length: int) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    template = field_value(reader, "tokenizer.chat_template")
    if template:
        log("chat template: from GGUF metadata")
    elif getattr(tok, "chat_template", None):
        template = tok.chat_template
        log("chat template: from transformers' GGUF tokenizer loader")
    else:
        template = CHATML_TEMPLATE
        log("chat template: GGUF has none, using SmolLM2 ChatML default")
    tok.chat_template = template
    tok.save_pretrained(str(tmp))

    # Make sure the template lands in tokenizer_config.json whatever transformers' default is
    # (recent versions write chat_template.jinja instead).
    tc_path = tmp / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text()) if tc_path.exists() else {}
    tc["chat_template"] = template
    # transformers 5 writes "TokenizersBackend", which transformers 4.x cannot load;
    # PreTrainedTokenizerFast (a tokenizer.json-backed tokenizer) loads in both.
    tc["tokenizer_class"] = "PreTrainedTokenizerFast"
    tc["model_max_length"] = context_length
    for key in ("is_local", "local_files_only"):  # loader state, not tokenizer settings
        tc.pop(key, None)
    tc_path.write_text(json.dumps(tc, indent=2, ensure_ascii=False) + "\n")

    check = AutoTokenizer.from_pretrained(str(tmp))
    ids = check.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    if "<|im_start|>" not in ids:
        raise ConversionError(f"saved tokenizer renders an unexpected chat prompt: {ids!r}")


def write_configs(tmp: Path, cfg: dict[str, Any]) -> None:
    import transformers

    cfg = {**cfg, "transformers_version": transformers.__version__}
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen: dict[str, Any] = {"_from_model_config": True}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in cfg:
            gen[key] = cfg[key]
    gen["transformers_version"] = transformers.__version__
    (tmp / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")


def convert(gguf_path: Path, out: Path) -> None:
    import gguf
    from safetensors.torch import save_file

    if not gguf_path.is_file():
        raise ConversionError(f"GGUF file not found: {gguf_path}")
    if (out / MARKER).exists():
        log(f"already converted: {out}")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        t0 = time.monotonic()
        log(f"reading {gguf_path}")
        reader = gguf.GGUFReader(str(gguf_path))
        cfg = read_config(reader)
        log(
            f"config: hidden={cfg['hidden_size']} layers={cfg['num_hidden_layers']}"
            f" heads={cfg['num_attention_heads']} kv_heads={cfg['num_key_value_heads']}"
            f" vocab={cfg['vocab_size']} ctx={cfg['max_position_embeddings']}"
        )
        tensors = convert_tensors(reader, cfg)
        log("writing model.safetensors (bf16)")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        del tensors
        write_configs(tmp, cfg)
        log("writing tokenizer")
        save_tokenizer(gguf_path, tmp, reader, cfg["max_position_embeddings"])
        (tmp / MARKER).write_text(
            json.dumps({"source": str(gguf_path), "seconds": round(time.monotonic() - t0, 1)})
            + "\n"
        )
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if out.exists():  # a stale, incomplete result (no marker): replace it
            shutil.rmtree(out)
        os.rename(tmp, out)
        log(f"done in {time.monotonic() - t0:.1f}s -> {out}")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True, type=Path, help="path of the .gguf file")
    parser.add_argument("--out", required=True, type=Path, help="output model directory")
    args = parser.parse_args(argv)
    try:
        convert(args.gguf.resolve(), args.out.resolve())
    except ConversionError as exc:
        print(f"[convert] ERROR: {exc}", file=sys.stderr, flush=True)
        return 2
    except ImportError as exc:
        print(
            f"[convert] ERROR: missing dependency ({exc}); needs gguf, numpy, torch, "
            "safetensors, transformers",
            file=sys.stderr,
            flush=True,
        )
        return 3
    except Exception as exc:
        traceback.print_exc()
        print(f"[convert] ERROR: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
