r"""Token counts of long prompts from cached counts of their repeated parts.

An explain prompt is ≈1,000 tokens, most of them the same from request to request: the
system prompt and runbook passages. Encoding all of it on every request was ~40% of the
router's CPU per streamed request (py-spy, bench/router_overhead.py). This counts a text
as the sum of the counts of its lines, each looked up in an LRU keyed by a hash of the
line's content (never the text itself: an attacker's long lines must not be held), and
encodes only the lines it has not seen.

Why the sum is exact: a byte-level BPE tokenizer with the GPT-2 split regex, no
normalizer and no added token that strips its neighbours' whitespace encodes each
pre-token (a regex match) on its own, and no match runs from a visible character into a
following newline. Cutting a text just before a newline that follows a visible ASCII
character therefore cuts between pre-tokens, and the counts of the parts add up to the
count of the whole. `LineCounts.for_tokenizer` returns None for any tokenizer that is
not of that shape, or whose count of a probe text differs when cut: then the whole text
is encoded as before.

A line not seen before is counted, if it is ASCII, the same way one level down: as the
sum of its pre-tokens' counts (the tokenizer's own split, special tokens first), each
looked up in a dict of short words (`WordCounts`): the distinct part of a prompt (an
alert: addresses, ports, field names) is made of words that repeat, and a Rust encode
call costs ~4× the Python split and lookups. For ASCII the GPT-2 split's `\p{L}`, `\p{N}`
and `\s` are exactly the classes written below; other text is encoded whole.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

# Before each newline that follows a visible ASCII character (see the module docstring).
_CUT = re.compile(r"(?<=[!-~])(?=\n)")
_PROBE = ("<|im_start|>system\nYou are a SOC analyst.<|im_end|>\n<|im_start|>user\n"
          "Runbook:\n  1. check the logs\n\n\tthen  block 203.0.113.7 \r\nÉté 日本 🚨\n"
          "{\"rule\": {\"id\": \"5710\"}}\n<|im_end|>\n<|im_start|>assistant\n")
DEFAULT_SIZE = 4096  # lines remembered; a prompt has tens
# GPT-2's pre-tokenizer split (tokenizers' ByteLevel with use_regex), for ASCII text.
_ASCII_WORDS = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+"
                          r"|\s+(?!\S)|\s+", re.ASCII)
MAX_WORD = 32  # longer pre-tokens (a blob) are encoded, never kept
WORDS_KEPT = 1 << 16  # then the word dict starts over


def content_key(text: str) -> bytes:
    """The cache key of a piece of text: a 128-bit hash of its content."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


class LineCounts:
    """Counts texts line by line, remembering the counts of `size` lines (LRU)."""

    def __init__(self, encode_count: Callable[[str], int], size: int = DEFAULT_SIZE) -> None:
        self._encode_count = encode_count
        self._size = size
        self._counts: OrderedDict[bytes, int] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @classmethod
    def for_tokenizer(cls, backend: Any, size: int = DEFAULT_SIZE) -> LineCounts | None:
        """For a Rust (`tokenizers`) tokenizer whose counts add up over the cuts, else
        None."""
        if not _additive_shape(backend):
            return None

        def encode_count(text: str) -> int:
            return len(backend.encode(text, add_special_tokens=False))

        words = WordCounts(encode_count, [t.content for t in
                                          backend.get_added_tokens_decoder().values()])
        probe = _PROBE.encode("ascii", "replace").decode()
        if words.count(probe) != encode_count(probe):  # not the split it looks like
            counts = cls(encode_count, size)
        else:
            counts = cls(lambda line: words.count(line) if line.isascii()
                         else encode_count(line), size)
        if counts.count(_PROBE) != encode_count(_PROBE):
            return None
        counts.clear()
        return counts

    def count(self, text: str) -> int:
        total = 0
        for line in split_lines(text):
            total += self._line(line)
        return total

    def _line(self, line: str) -> int:
        key = content_key(line)
        known = self._counts.get(key)
        if known is not None:
            self._counts.move_to_end(key)
            self.hits += 1
            return known
        self.misses += 1
        counted = self._encode_count(line)
        self._counts[key] = counted
        if len(self._counts) > self._size:
            self._counts.popitem(last=False)
        return counted

    def clear(self) -> None:
        self._counts.clear()
        self.hits = self.misses = 0


def split_lines(text: str) -> list[str]:
    """`_CUT.split(text)`, by str.split: the regex's look-behind at every position cost
    more than the rest of a count (~120 µs of an explain prompt's ~300)."""
    parts = text.split("\n")
    lines, line = [], parts[0]
    for part in parts[1:]:
        if line and "!" <= line[-1] <= "~":  # a visible ASCII character before the newline
            lines.append(line)
            line = "\n" + part
        else:
            line += "\n" + part
    lines.append(line)
    return lines


class WordCounts:
    """Counts an ASCII text as its special tokens (one each) plus the counts of the
    pre-tokens between them, short ones remembered by content."""

    def __init__(self, encode_count: Callable[[str], int], specials: list[str]) -> None:
        self._encode_count = encode_count
        ordered = sorted(specials, key=len, reverse=True)  # leftmost, then longest
        self._specials = re.compile("(" + "|".join(map(re.escape, ordered)) + ")") \
            if ordered else None
        self._counts: dict[str, int] = {}

    def count(self, text: str) -> int:
        parts = self._specials.split(text) if self._specials is not None else [text]
        total = len(parts) // 2  # the special tokens between the parts
        counts = self._counts
        for part in parts[::2]:
            for word in _ASCII_WORDS.findall(part):
                known = counts.get(word)
                if known is None:
                    known = self._encode_count(word)
                    if len(word) <= MAX_WORD:
                        if len(counts) >= WORDS_KEPT:
                            counts.clear()
                        counts[word] = known
                total += known
        return total


def _additive_shape(backend: Any) -> bool:
    """Byte-level BPE with the GPT-2 regex, no prefix space, no normalizer, and no added
    token that eats whitespace next to it."""
    try:
        from tokenizers import pre_tokenizers
        from tokenizers.models import BPE
    except ImportError:
        return False
    pre = getattr(backend, "pre_tokenizer", None)
    if (getattr(backend, "normalizer", None) is not None
            or not isinstance(getattr(backend, "model", None), BPE)
            or not isinstance(pre, pre_tokenizers.ByteLevel)
            or pre.add_prefix_space or not pre.use_regex):
        return False
    added = backend.get_added_tokens_decoder().values()
    return not any(token.lstrip or token.rstrip or token.single_word for token in added)
