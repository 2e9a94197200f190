"""Exact token counts with the served model's own tokenizer and chat template.

The count is what vLLM will report as prompt_tokens, so quotas and pool choice are
decided on the truth, not on characters / 4. One tokenizer per model, loaded once.

A chat is counted as transformers' `apply_chat_template(tokenize=True)` counts it (the
template rendered, then tokenized without added special tokens), on a shorter path:
plain role/content chats are rendered by transformers' compiled template directly and
the text goes straight to the Rust tokenizer. transformers' Python around both (input
normalisation, batching, BatchEncoding) cost twice the CPU of the work itself, and the
count runs on every request (bench/router_overhead.py). Anything else, or a tokenizer
where the short path renders differently, goes the long way. With a tokenizer whose counts
add up line by line, the lines' counts are cached by content (token_cache.py): the system
prompt and runbook passages repeat from request to request.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from pipeline.router.token_cache import LineCounts

Message = dict[str, str]

_PLAIN_KEYS = frozenset({"role", "content", "name"})
_PROBE: list[Message] = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                         {"role": "assistant", "content": "a"}, {"role": "user", "content": "v"}]


class TokenCounter:
    def __init__(self, tokenizer_dir: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        # The fast (Rust) tokenizer, set as transformers' __call__ sets it before each
        # encoding: no truncation, no padding, special tokens in the text kept whole.
        # None for a slow (Python) tokenizer: then transformers counts.
        backend = getattr(self._tokenizer, "backend_tokenizer", None)
        self._backend: Any = None
        if backend is not None and not getattr(self._tokenizer, "split_special_tokens", False):
            backend.no_truncation()
            backend.no_padding()
            backend.encode_special_tokens = False
            self._backend = backend
        self._lines = None if self._backend is None else LineCounts.for_tokenizer(backend)
        self._render = self._direct_render()

    def count_chat(self, messages: Sequence[Message]) -> int:
        if self._backend is None:
            ids = self._tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5: encodings
                ids = ids["input_ids"]
            return len(ids)
        return self._count(self.render(messages))

    def count_text(self, text: str) -> int:
        if self._backend is None:
            return len(self._tokenizer.encode(text, add_special_tokens=False))
        return self._count(text)

    def render(self, messages: Sequence[Message]) -> str:
        """The prompt text of a chat, with the generation prompt, as vLLM renders it."""
        if self._render is not None and all(
                type(m) is dict and m.keys() <= _PLAIN_KEYS
                and all(type(v) is str for v in m.values()) for m in messages):
            return self._render(messages)
        text: str = self._tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=False)
        return text

    def _count(self, text: str) -> int:
        if self._lines is not None:
            return self._lines.count(text)
        return len(self._backend.encode(text, add_special_tokens=False))

    def _direct_render(self) -> Callable[[Sequence[Message]], str] | None:
        """transformers' compiled chat template, called with what apply_chat_template
        passes it for a plain chat without tools or documents; None when it is not there
        or does not render a probe chat exactly as apply_chat_template does."""
        template = getattr(self._tokenizer, "chat_template", None)
        if not isinstance(template, str):
            return None
        try:
            from transformers.utils.chat_template_utils import _compile_jinja_template

            compiled = _compile_jinja_template(template)
            variables = {**self._tokenizer.special_tokens_map, "tools": None,
                         "documents": None, "add_generation_prompt": True}

            def render(messages: Sequence[Message]) -> str:
                return str(compiled.render(messages=messages, **variables))

            expected = self._tokenizer.apply_chat_template(
                _PROBE, add_generation_prompt=True, tokenize=False)
            return render if render(_PROBE) == expected else None
        except Exception:  # another transformers: its own path always works
            return None


@lru_cache(maxsize=8)
def counter_for(tokenizer_dir: Path) -> TokenCounter:
    return TokenCounter(tokenizer_dir)
