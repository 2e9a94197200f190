"""The latency model of one simulated vLLM replica (virtual time: asyncio.sleep, no CPU).

- Admission: at most `max_num_seqs` sequences run at once; the rest wait in FIFO order.
- Prefill: `prefill_ms_per_token` per uncached prompt token, `cached_prefill_ms_per_token`
  per token found in the prefix cache. Prefill is compute-bound: one at a time per replica
  (FIFO), so a long prompt delays the first token of every request behind it — the
  head-of-line blocking that token-aware routing avoids. Requests queued for prefill count
  as waiting.
- Prefix cache: the prompt's tokens cut into blocks of `block_size`, each identified by a
  chained hash (a block hits only if every block before it hit, as in vLLM); an LRU of
  `prefix_cache_blocks` block hashes.
- Decode: `itl_ms` per output token, plus `itl_ms_per_running` per other running sequence
  (batching slows every sequence a little).
- Tokens: one token per word (whitespace split) of each message plus 4 per message; the
  output is `output_tokens` words, or fewer when `max_tokens` says so.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class SimConfig:
    max_num_seqs: int = 8
    prefill_ms_per_token: float = 0.5
    cached_prefill_ms_per_token: float = 0.02
    itl_ms: float = 20.0
    itl_ms_per_running: float = 0.5
    output_tokens: int = 16
    block_size: int = 16
    prefix_cache_blocks: int = 2048
    kv_cache_tokens: int = 65_536
    # Faults (also settable at run time on POST /admin/faults).
    fail_rate: float = 0.0  # probability of an HTTP 500
    drop_rate: float = 0.0  # probability of dropping the connection without a reply
    slow_factor: float = 1.0  # multiplies every latency
    seed: int | None = None


@dataclass
class Counters:
    prompt_tokens: int = 0
    generation_tokens: int = 0
    prefix_cache_hits: int = 0
    prefix_cache_queries: int = 0
    requests: int = 0


def count_tokens(messages: Sequence[dict[str, Any]]) -> list[str]:
    words: list[str] = []
    for message in messages:
        content = message.get("content") or ""
        if not isinstance(content, str):
            content = " ".join(str(part.get("text", "")) for part in content)
        words.extend(["<msg>", str(message.get("role", "")), "<content>", "</msg>"])
        words.extend(content.split())
    return words


class Engine:
    def __init__(self, config: SimConfig,
                 on_ttft: Callable[[float], None] | None = None) -> None:
        self.config = config
        self._on_ttft = on_ttft
        self.counters = Counters()
        self.running = 0
        self.waiting: deque[asyncio.Future[None]] = deque()
        self.prefill_queued = 0
        self._prefill = asyncio.Lock()
        self.kv_tokens = 0
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._rng = random.Random(config.seed)

    # --- what /metrics reads -------------------------------------------------------
    @property
    def num_waiting(self) -> int:
        return len(self.waiting) + self.prefill_queued

    @property
    def kv_cache_usage(self) -> float:
        return min(1.0, self.kv_tokens / self.config.kv_cache_tokens)

    def roll_fault(self) -> str | None:
        draw = self._rng.random()
        if draw < self.config.drop_rate:
            return "drop"
        if draw < self.config.drop_rate + self.config.fail_rate:
            return "fail"
        return None

    # --- one request ---------------------------------------------------------------
    def cached_tokens(self, words: list[str]) -> int:
        """Look up and insert the prompt's full blocks; returns the tokens that hit."""
        size = self.config.block_size
        chain = hashlib.blake2b(digest_size=16)
        hits, missed = 0, False
        for start in range(0, len(words) - size + 1, size):
            chain.update(" ".join(words[start:start + size]).encode())
            key = chain.copy().digest()
            if not missed and key in self._cache:
                hits += size
                self._cache.move_to_end(key)
            else:
                missed = True
                self._cache[key] = None
                if len(self._cache) > self.config.prefix_cache_blocks:
                    self._cache.popitem(last=False)
        return hits

    async def generate(self, words: list[str], max_tokens: int) -> AsyncIterator[str]:
        """Yields output tokens at the model's pace; the first yield is the first token."""
        arrived = time.perf_counter()
        await self._admit()
        prompt = len(words)
        self.kv_tokens += prompt
        generated = 0
        try:
            cached = self.cached_tokens(words)
            cfg = self.config
            self.counters.requests += 1
            self.counters.prompt_tokens += prompt
            self.counters.prefix_cache_queries += prompt
            self.counters.prefix_cache_hits += cached
            prefill_ms = ((prompt - cached) * cfg.prefill_ms_per_token
                          + cached * cfg.cached_prefill_ms_per_token)
            self.prefill_queued += 1
            try:
                await self._prefill.acquire()
            finally:
                self.prefill_queued -= 1
            try:
                await asyncio.sleep(prefill_ms * cfg.slow_factor / 1000)
            finally:
                self._prefill.release()
            target = max(1, min(max_tokens, cfg.output_tokens))
            for n in range(target):
                if n == 0:
                    if self._on_ttft is not None:
                        self._on_ttft(time.perf_counter() - arrived)
                else:
                    itl = cfg.itl_ms + cfg.itl_ms_per_running * (self.running - 1)
                    await asyncio.sleep(itl * cfg.slow_factor / 1000)
                generated += 1
                self.kv_tokens += 1
                self.counters.generation_tokens += 1
                yield f"tok{n}"
        finally:
            self.kv_tokens -= prompt + generated
            self._release()

    async def _admit(self) -> None:
        if self.running < self.config.max_num_seqs and not self.waiting:
            self.running += 1
            return
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(ticket)
        try:
            await ticket  # _release hands over its slot (running stays counted)
        except asyncio.CancelledError:
            if ticket in self.waiting:
                self.waiting.remove(ticket)
            elif ticket.done() and not ticket.cancelled():
                self._release()  # we were handed a slot but are gone: pass it on
            raise

    def _release(self) -> None:
        while self.waiting:
            ticket = self.waiting.popleft()
            if not ticket.done():
                ticket.set_result(None)
                return
        self.running -= 1
