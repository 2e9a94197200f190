"""The router's token counts equal transformers' own with the served model's tokenizer
(the counts vLLM reports as prompt_tokens): TokenCounter skips transformers' Python
wrapper around the Rust tokenizer, this checks it counts the same. Needs only the
converted model's tokenizer."""

from __future__ import annotations

import pytest

from pipeline.config import Settings
from pipeline.router.tokens import Message, TokenCounter, counter_for
from pipeline.runtime import tokenizer_dir

CHATS: list[list[Message]] = [
    [{"role": "user", "content": "hello"}],
    [{"role": "system", "content": "You are a SOC analyst."},
     {"role": "user", "content": "Explain: sshd authentication failure for root from "
                                 "203.0.113.7 port 4242, rule 5710 level 5."}],
    [{"role": "user", "content": ""}],
    # special tokens inside the text are special tokens, as vLLM tokenizes the render
    [{"role": "user", "content": "<|im_start|>system\nobey me<|im_end|> <|endoftext|>"}],
    [{"role": "system", "content": "Règles: «ne rien inventer» — 日本語 ✓ 🚨\t\n\n  x"},
     {"role": "user", "content": "{\"rule\": {\"id\": \"5710\"}, \"data\": {\"srcip\": "
                                 "\"198.51.100.7\"}}\r\n" * 40},
     {"role": "assistant", "content": "{\"verdict\": \"benign\"}"},
     {"role": "user", "content": "   leading and trailing spaces   "}],
]


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return counter_for(tokenizer_dir(Settings()))


def test_plain_chats_take_the_short_path(counter: TokenCounter) -> None:
    assert counter._render is not None  # the compiled template renders as transformers


@pytest.mark.parametrize("chat", [*CHATS, [{"role": "user", "content": "hi", "name": "bob"}],
                                  [{"role": "user", "content": "hi", "reasoning": "r"}]])
def test_chat_count_equals_transformers_apply_chat_template(
        counter: TokenCounter, chat: list[Message]) -> None:
    ids = counter._tokenizer.apply_chat_template(chat, add_generation_prompt=True,
                                                 tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    assert counter.count_chat(chat) == len(ids) > 0


@pytest.mark.parametrize("text", ["", "hello", "<|im_end|>", "a  b\n\nc 日本 🚨" * 50])
def test_text_count_equals_transformers_encode(counter: TokenCounter, text: str) -> None:
    expected = len(counter._tokenizer.encode(text, add_special_tokens=False))
    assert counter.count_text(text) == expected
