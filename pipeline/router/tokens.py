"""Exact token counts with the served model's own tokenizer and chat template.

The count is what vLLM will report as prompt_tokens, so quotas and pool choice are
decided on the truth, not on characters / 4. One tokenizer per model, loaded once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

Message = dict[str, str]


class TokenCounter:
    def __init__(self, tokenizer_dir: Path) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoTokenizer

        self._tokenizer: Any = AutoTokenizer.from_pretrained(str(tokenizer_dir))

    def count_chat(self, messages: Sequence[Message]) -> int:
        ids = self._tokenizer.apply_chat_template(
            list(messages), add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):  # transformers 5 returns encodings
            ids = ids["input_ids"]
        return len(ids)

    def count_text(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))


@lru_cache(maxsize=8)
def counter_for(tokenizer_dir: Path) -> TokenCounter:
    return TokenCounter(tokenizer_dir)
