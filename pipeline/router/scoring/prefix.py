"""Prefix affinity: requests that share a long prefix go to the replica that has it in
its KV cache, by consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam,
2018), so that a hot prefix spills to the next replica on the ring instead of overloading
one.

The key is a hash of the request's leading text, cut at a block boundary: vLLM's prefix
cache only ever hits whole blocks, so text past the last full block cannot be reused
anyway, and cutting there keeps the alert-specific tail of an explain prompt (after the
system prompt and the runbook excerpts) out of the key.

Besides the key, the whole prompt is cut into blocks with chained hashes (a block's hash
covers every block before it, as vLLM's do), and the router remembers which replica it
sent which blocks to recently: the leading blocks a replica has seen estimate how much of
a prompt its prefix cache will spare (`cached_fraction`), which the `ttft` scorer uses.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections import OrderedDict
from collections.abc import Sequence

from pipeline.router.replicas import Replica
from pipeline.router.scoring.base import PickContext
from pipeline.router.scoring.params import AffinityParams
from pipeline.router.tokens import Message

_DEFAULTS = AffinityParams()


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def prefix_key(messages: Sequence[Message], blocks: Sequence[int] | None = None, *,
               block_chars: int = _DEFAULTS.block_chars,
               user_chars: int = _DEFAULTS.user_prefix_chars) -> int | None:
    """The key: the messages before the first user message + the first `user_chars` of
    it, cut to whole blocks — i.e. the hash of the prompt's block where that span ends
    (`blocks`: the prompt's `prompt_blocks`, when already computed). None when the span
    is shorter than one block (nothing to reuse)."""
    parts: list[str] = []
    for message in messages:
        role, content = message.get("role", ""), str(message.get("content", ""))
        if role == "user":
            parts.append(f"<{role}>{content[:user_chars]}")
            break
        parts.append(f"<{role}>{content}")
    whole = len("".join(parts).encode()) // block_chars
    if whole == 0:
        return None
    if blocks is None:
        blocks = prompt_blocks(messages, block_chars=block_chars, max_blocks=whole)
    return blocks[min(whole, len(blocks)) - 1]


def prompt_text(messages: Sequence[Message]) -> str:
    return "".join(f"<{m.get('role', '')}>{m.get('content', '')}" for m in messages)


def prompt_blocks(messages: Sequence[Message], *, block_chars: int = _DEFAULTS.block_chars,
                  max_blocks: int = _DEFAULTS.max_blocks) -> tuple[int, ...]:
    """Chained hashes of the prompt's whole blocks, then one for its partial last block
    (so a prompt's every character is counted when it is compared)."""
    text = prompt_text(messages).encode()
    chain = hashlib.blake2b(digest_size=8)
    out = []
    for start in range(0, min(len(text), max_blocks * block_chars), block_chars):
        chain.update(text[start:start + block_chars])
        out.append(int.from_bytes(chain.copy().digest(), "big"))
    return tuple(out)


class PrefixAffinity:
    """The ring of a pool's replicas (`vnodes` points each) plus a short memory of which
    replicas served which prefix recently."""

    def __init__(self, params: AffinityParams | None = None) -> None:
        self.params = params if params is not None else AffinityParams()
        self._rings: dict[tuple[str, ...], tuple[list[int], list[str]]] = {}
        self._recent: OrderedDict[tuple[int, str], float] = OrderedDict()
        self._last: OrderedDict[int, str] = OrderedDict()
        # Per replica URL: block hash → when the router last sent that block there (LRU).
        self._blocks: dict[str, OrderedDict[int, float]] = {}

    def blocks(self, messages: Sequence[Message]) -> tuple[int, ...]:
        """The prompt's chained block hashes, cut by these parameters."""
        return prompt_blocks(messages, block_chars=self.params.block_chars,
                             max_blocks=self.params.max_blocks)

    def key(self, messages: Sequence[Message], blocks: Sequence[int]) -> int | None:
        """The prompt's prefix key (`prefix_key`), cut by these parameters."""
        return prefix_key(messages, blocks, block_chars=self.params.block_chars,
                          user_chars=self.params.user_prefix_chars)

    def ring_order(self, key: int, urls: Sequence[str]) -> list[str]:
        """Distinct replicas in ring order clockwise from the key's point."""
        points, owners = self._ring(tuple(sorted(urls)))
        start = bisect.bisect(points, key)
        order: list[str] = []
        for i in range(len(points)):
            owner = owners[(start + i) % len(points)]
            if owner not in order:
                order.append(owner)
                if len(order) == len(urls):
                    break
        return order

    def bound(self, replicas: Sequence[Replica]) -> int:
        """max(ceil((1 + ε) × average in-flight, counting this request), min_bound): at low
        load a replica may take a few requests of one prefix before it spills."""
        total = sum(r.in_flight_requests for r in replicas) + 1
        return max(math.ceil((1 + self.params.epsilon) * total / max(len(replicas), 1)),
                   self.params.min_bound)

    def target(self, key: int, replicas: Sequence[Replica]) -> Replica | None:
        """The first replica clockwise whose in-flight requests + 1 stay within the bound."""
        if not replicas:
            return None
        bound = self.bound(replicas)
        by_url = {r.url: r for r in replicas}
        for url in self.ring_order(key, list(by_url)):
            if by_url[url].in_flight_requests + 1 <= bound:
                return by_url[url]
        return None  # unreachable: some replica is at or below the average

    def target_scores(self, replicas: Sequence[Replica], ctx: PickContext) -> list[float]:
        """Within the load bound: 1 for the replica that served this prefix last (within
        the TTL), 0.5 for others that served it; for a prefix no in-bound replica served,
        `unseen_score` for its consistent-hashing target (a tie-breaker: the load scorers place a
        new prefix, then it stays). All 0 without a key."""
        out = [0.0] * len(replicas)
        key = ctx.prefix_key
        if key is None:
            return out
        bound = self.bound(replicas)
        last = self._last.get(key)
        seen = False
        for i, replica in enumerate(replicas):
            if (replica.in_flight_requests + 1 <= bound
                    and self._served_recently(key, replica.url, ctx.now)):
                out[i] = 1.0 if last is not None and last == replica.url else 0.5
                seen = True
        if not seen:
            chosen = self.target(key, replicas)
            out = [self.params.unseen_score if r is chosen else 0.0 for r in replicas]
        return out

    def served(self, key: int | None, url: str, now: float) -> None:
        if key is None:
            return
        self._last[key] = url
        self._last.move_to_end(key)
        while len(self._last) > self.params.recent_capacity:
            self._last.popitem(last=False)
        self._recent[(key, url)] = now
        self._recent.move_to_end((key, url))
        while len(self._recent) > self.params.recent_capacity:
            self._recent.popitem(last=False)

    def cached_fraction(self, blocks: Sequence[int], url: str, now: float) -> float:
        """The share of the prompt's blocks that lead it and were sent to `url` within the
        TTL: what its prefix cache is expected to hold (it may have evicted them since)."""
        sent = self._blocks.get(url)
        if not blocks or sent is None:
            return 0.0
        hits = 0
        for block in blocks:
            seen = sent.get(block)
            if seen is None or now - seen > self.params.recent_ttl_s:
                break
            hits += 1
        return hits / len(blocks)

    def sent_blocks(self, blocks: Sequence[int], url: str, now: float) -> None:
        sent = self._blocks.setdefault(url, OrderedDict())
        for block in blocks:
            sent[block] = now
            sent.move_to_end(block)
        while len(sent) > self.params.blocks_per_replica:
            sent.popitem(last=False)

    def _served_recently(self, key: int, url: str, now: float) -> bool:
        seen = self._recent.get((key, url))
        return seen is not None and now - seen <= self.params.recent_ttl_s

    def _ring(self, urls: tuple[str, ...]) -> tuple[list[int], list[str]]:
        ring = self._rings.get(urls)
        if ring is None:
            pairs = sorted((_hash(f"{url}#{v}".encode()), url)
                           for url in urls for v in range(self.params.vnodes))
            ring = ([p for p, _ in pairs], [u for _, u in pairs])
            self._rings[urls] = ring
        return ring


class PrefixAffinityScorer:
    def __init__(self, affinity: PrefixAffinity) -> None:
        self._affinity = affinity

    def score(self, replicas: Sequence[Replica], ctx: PickContext) -> Sequence[float]:
        return self._affinity.target_scores(replicas, ctx)
