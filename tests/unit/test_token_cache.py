"""LineCounts (pipeline/router/token_cache.py): cached line counts give what a fresh count
gives, and a line's key follows its content."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.router.token_cache import _CUT, LineCounts, content_key, split_lines


def words(text: str) -> int:
    """A stand-in tokenizer whose counts add up over the cuts: one token per word and
    one per newline."""
    return len(text.split()) + text.count("\n")


PROMPT = "system: you are a SOC analyst\nRunbook:\nblock the address\n\nAlert: 203.0.113.7"


def test_a_cached_count_equals_a_fresh_count() -> None:
    cached = LineCounts(words)
    first = cached.count(PROMPT)
    again = cached.count(PROMPT)
    assert first == again == words(PROMPT)
    assert cached.hits == cached.misses > 0  # the second count encoded nothing


def test_only_unseen_lines_are_encoded() -> None:
    encoded: list[str] = []

    def counting(text: str) -> int:
        encoded.append(text)
        return words(text)

    cached = LineCounts(counting)
    cached.count(PROMPT)
    encoded.clear()
    other = PROMPT.replace("203.0.113.7", "198.51.100.9")
    assert cached.count(other) == words(other)
    assert encoded == ["\n\nAlert: 198.51.100.9"]  # the shared lines came from the cache


def test_different_content_different_key() -> None:
    assert content_key("block 203.0.113.7") != content_key("block 203.0.113.8")
    assert content_key("same text") == content_key("same text")
    assert len(content_key("x" * 100_000)) == 16  # the key never holds the text


def test_the_cache_is_bounded_and_forgets_the_least_recent() -> None:
    cached = LineCounts(words, size=2)
    for line in ("one", "two", "three"):
        cached.count(line)
    cached.count("one")  # evicted: encoded again
    assert cached.misses == 4 and cached.hits == 0
    assert cached.count("three") == 1 and cached.hits == 1


def test_a_lone_surrogate_is_counted_not_raised() -> None:
    assert LineCounts(words).count("bad \ud800 text\nnext") == words("bad \ud800 text\nnext")


def test_word_counts_split_specials_and_keep_only_short_words() -> None:
    from pipeline.router.token_cache import MAX_WORD, WordCounts

    encoded: list[str] = []

    def per_char(text: str) -> int:  # a stand-in: one token per character
        encoded.append(text)
        return len(text)

    counts = WordCounts(per_char, ["<|im_end|>", "<|im"])
    blob = "x" * (MAX_WORD + 1)
    text = f"block 203.0.113.7<|im_end|>\n{blob} block"
    # 2 words + 7 pieces of the address, the special token (1), "\n", the blob, " block"
    assert counts.count(text) == len(text) - len("<|im_end|>") + 1
    assert "<|im_end|>" not in "".join(encoded) and "<|im" not in "".join(encoded)
    encoded.clear()
    assert counts.count(text) == len(text) - len("<|im_end|>") + 1
    assert encoded == [blob]  # every short word came from the dict; the blob is not kept


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(["\n", "\r", " ", "\t", "a", "}", "~", "\x7f", "é",
                                         "日", "!", "\x00"]), max_size=40))
def test_split_lines_cuts_where_the_regex_cuts(text: str) -> None:
    assert split_lines(text) == _CUT.split(text)
