"""With the served model's tokenizer, counting line by line with cached counts
(pipeline/router/token_cache.py) gives exactly the count of encoding the whole text, on
prompts as the explain stage sends them and on arbitrary text (hypothesis)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config import Settings
from pipeline.router.token_cache import LineCounts
from pipeline.router.tokens import TokenCounter, counter_for
from pipeline.runtime import tokenizer_dir


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return counter_for(tokenizer_dir(Settings()))


def whole(counter: TokenCounter, text: str) -> int:
    backend: Any = counter._backend
    return len(backend.encode(text, add_special_tokens=False))


def test_the_served_tokenizer_counts_line_by_line(counter: TokenCounter) -> None:
    assert isinstance(counter._lines, LineCounts)


def test_explain_like_chats_count_as_the_whole_render(counter: TokenCounter) -> None:
    system = "You are a SOC analyst.\nAnswer in JSON.\n  - cite the runbook\n"
    passages = ["Step 1: check auth.log\nStep 2: block 203.0.113.7 ", "Escalate: P1\n\n\tcall"]
    for n in range(20):
        chat = [{"role": "system", "content": system},
                {"role": "user", "content": f"Runbook:\n{passages[n % 2]}\n\nAlert {n}:\n"
                                            f"{{\"srcip\": \"198.51.100.{n}\"}}\r\n日本 🚨"}]
        assert counter.count_chat(chat) == whole(counter, counter.render(chat))
    assert counter._lines is not None and counter._lines.hits > 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.text(max_size=30),
    st.sampled_from(["\n", "\n\n", " \n", "\r\n", "\t\n", "<|im_end|>", "<|im_start|>",
                     "<|endoftext|>", "'s", " 's\n", "x\n", "é\n", "1\n2", "  ", "\u00a0\n",
                     "\x1c\n", "\x85", "a\u2028b"])), max_size=30))
def test_any_text_counts_as_the_whole(counter: TokenCounter, parts: list[str]) -> None:
    text = "".join(parts)
    assert counter.count_text(text) == whole(counter, text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.text(alphabet=st.characters(max_codepoint=127), max_size=40),
    st.sampled_from(["<|im_end|>", "<|im_start|>", "<|endoftext|>", "'s", "'S", " 'll",
                     "   x", "\t \n", "203.0.113.7:22", "x" * 40, "\x0b\x1c"])), max_size=30))
def test_ascii_text_counted_by_words_counts_as_the_whole(counter: TokenCounter,
                                                         parts: list[str]) -> None:
    """ASCII lines not seen before are counted word by word (token_cache.WordCounts)."""
    text = "".join(parts)
    assert counter.count_text(text) == whole(counter, text)
