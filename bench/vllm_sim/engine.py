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
- Priority (`priority_scheduling` = 1, as vLLM's `--scheduling-policy priority`): the
  request's `priority` (lower first, ties by arrival) orders both the waiting queue and
  the prefill queue; without it a request with a non-zero priority is refused, as vLLM
  refuses it. (vLLM may also preempt a running request for a higher-priority one; the
  simulator does not.)
- Tokens: one token per word (whitespace split) of each message plus 4 per message; the
  output is `output_tokens` words, or fewer when `max_tokens` says so.
- CPU (`cpu_us_per_token`, default 0): each request burns that many microseconds of real
  CPU per prompt token before it is queued, as vLLM's API server spends CPU tokenizing
  and rendering a prompt, so a router measured against the simulator shares the machine
  with a server that is not idle (bench/router_overhead.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import random
import time
from collections import OrderedDict
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
    priority_scheduling: int = 0  # 1: order queues by the request's `priority`
    cpu_us_per_token: float = 0.0  # real CPU burnt per prompt token (tokenizer-like work)
    record_timings: int = 0  # 1: keep each request's arrival / first byte (GET /admin/timings)
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


def burn_cpu(words: list[str], us_per_token: float) -> None:
    """Hash the prompt's words until `us_per_token` × tokens of CPU time is spent: real
    work on the request's own content, bounded by the process's CPU clock (not the wall
    clock, so a descheduled process does not burn less)."""
    if us_per_token <= 0 or not words:
        return
    until = time.thread_time() + us_per_token * len(words) / 1e6
    digest = hashlib.blake2b(digest_size=16)
    index = 0
    while time.thread_time() < until:
        for word in words[index:index + 64]:
            digest.update(word.encode())
        index = (index + 64) % len(words)


class PriorityQueueGate:
    """`capacity` holders at once; the rest wait ordered by (priority, arrival)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.holders = 0
        self.waiting = 0
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []  # a heap
        self._arrivals = itertools.count()

    async def acquire(self, priority: int = 0) -> None:
        if self.holders < self.capacity and not self.waiting:
            self.holders += 1
            return
        ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._queue, (priority, next(self._arrivals), ticket))
        self.waiting += 1
        try:
            await ticket  # release() hands over its place (holders stays counted)
        except asyncio.CancelledError:
            if ticket.cancelled():
                self.waiting -= 1  # left in the heap, skipped when popped
            else:
                self.release()  # handed a place but gone: pass it on
            raise

    def release(self) -> None:
        while self._queue:
            _, _, ticket = heapq.heappop(self._queue)
            if not ticket.done():
                self.waiting -= 1
                ticket.set_result(None)
                return
        self.holders -= 1


class PriorityNotEnabled(ValueError):
    pass


class Engine:
    def __init__(self, config: SimConfig,
                 on_ttft: Callable[[float], None] | None = None) -> None:
        self.config = config
        self._on_ttft = on_ttft
        self.counters = Counters()
        self._slots = PriorityQueueGate(config.max_num_seqs)
        self.prefill_queued = 0
        self._prefill = PriorityQueueGate(1)
        self.kv_tokens = 0
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._rng = random.Random(config.seed)

    # --- what /metrics reads -------------------------------------------------------
    @property
    def running(self) -> int:
        return self._slots.holders

    @property
    def num_waiting(self) -> int:
        return self._slots.waiting + self.prefill_queued

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

    def check_priority(self, priority: int) -> None:
        if priority and not self.config.priority_scheduling:
            raise PriorityNotEnabled(f"Got priority {priority} but Priority scheduling is "
                                     "not enabled.")

    async def generate(self, words: list[str], max_tokens: int,
                       priority: int = 0) -> AsyncIterator[str]:
        """Yields output tokens at the model's pace; the first yield is the first token."""
        arrived = time.perf_counter()
        self.check_priority(priority)
        await self._slots.acquire(priority)
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
                await self._prefill.acquire(priority)
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
            self._slots.release()
