"""The router's model of one replica's prefill queue, as a time: how long until a prompt
dispatched now would start prefilling there.

Counting queued prompt tokens (the removed `prefill-queue` scorer did) treats a long prompt that is
almost done the same as one just sent. This model keeps an expected finish time,
`busy_until`, that runs down with the clock:

- dispatch of `n` tokens: `busy_until = max(now, busy_until) + n × seconds_per_token`;
- first token of a request (its prefill is done; the next queued one starts now):
  `busy_until = now + tokens still queued × seconds_per_token` — re-anchored on what was
  observed, so estimation errors do not accumulate;
- `seconds_per_token` is learned per replica only from requests sent to a replica with
  nothing else queued (their time to first token is their own prefill, not a wait).
"""

from __future__ import annotations

from dataclasses import dataclass

INITIAL_SECONDS_PER_TOKEN = 5e-4
EWMA_ALPHA = 0.1
MIN_SAMPLE_TOKENS = 64  # a tiny prompt's time is mostly fixed overhead


@dataclass
class PrefillModel:
    queued_tokens: int = 0
    seconds_per_token: float = INITIAL_SECONDS_PER_TOKEN
    busy_until: float = 0.0

    def expected_wait(self, now: float) -> float:
        return max(0.0, self.busy_until - now)

    def dispatched(self, tokens: int, now: float) -> bool:
        """Queue `tokens`; True when the replica had nothing queued (a clean sample)."""
        alone = self.queued_tokens == 0
        self.queued_tokens += tokens
        self.busy_until = max(now, self.busy_until) + tokens * self.seconds_per_token
        return alone

    def first_token(self, tokens: int, dispatched_at: float, now: float, alone: bool) -> None:
        if alone and tokens >= MIN_SAMPLE_TOKENS and now > dispatched_at:
            sample = (now - dispatched_at) / tokens
            self.seconds_per_token += EWMA_ALPHA * (sample - self.seconds_per_token)
        self.queued_tokens = max(0, self.queued_tokens - tokens)
        self.busy_until = now + self.queued_tokens * self.seconds_per_token

    def abandoned(self, tokens: int, now: float) -> None:
        self.queued_tokens = max(0, self.queued_tokens - tokens)
        self.busy_until = max(now, self.busy_until - tokens * self.seconds_per_token)
