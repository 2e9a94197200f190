"""Python's garbage collector set for a process that serves many requests at once (the
gateway, the explain stage's router): done once, after start-up.

- The tokenizer and its libraries leave ~400k long-lived objects; a full collection
  scanning them stalls the event loop ~200 ms (measured), which every waiting request
  pays. Frozen (`gc.freeze`), the collector skips them.
- Each request's objects live ~0.1–0.3 s (a call in flight, its usage row, its stream):
  at Python's default gen-0 threshold (700 allocations) they are promoted and set off
  full collections over every live object — about a fifth of a router process's CPU
  with 2,000 requests in flight (bench/usage_events.py, `--gc-threshold 700` against
  the default). A higher gen-0 threshold lets them die young; what it costs is at most
  that many more short-lived objects held until the next collection.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000


def settle_for_serving(gen0_threshold: int = GEN0_THRESHOLD) -> None:
    """Collect once, freeze what lives on, and raise the gen-0 threshold."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(gen0_threshold, 20, 20)
