"""The router's model of one replica's decode slots: how long a request dispatched now
would wait for one.

vLLM runs at most `--max-num-seqs` sequences at once; a request beyond that waits in the
replica's queue until a running one finishes, however idle the prefill is. The prefill
model (prefill.py) does not see that wait: once a replica's first tokens are out its
queued prefill is empty, though its slots may all be held by requests still decoding.

- occupied = requests on the replica, running or waiting: the larger of the router's own
  in-flight count (exact, updated at dispatch and completion, so fresh between scrapes)
  and the last scrape's `vllm:num_requests_running + vllm:num_requests_waiting` (which
  also holds other router processes' requests);
- a new request waits for `occupied + 1 − max_num_seqs` requests to finish (none if ≤ 0);
  slots free at `max_num_seqs / hold_s` per second, so the wait is
  `excess × hold_s / max_num_seqs`;
- `hold_s`, how long a request holds its slot after its first token (its decode), is
  learned per replica (EWMA) from the router's completed requests.
"""

from __future__ import annotations

from dataclasses import dataclass

INITIAL_HOLD_S = 0.5
EWMA_ALPHA = 0.1


@dataclass
class DecodeSlots:
    hold_s: float = INITIAL_HOLD_S  # learned: first token → end of a request

    def finished(self, first_token_at: float, now: float) -> None:
        """A request that had its first token at `first_token_at` ended now."""
        if now >= first_token_at:
            self.hold_s += EWMA_ALPHA * ((now - first_token_at) - self.hold_s)

    def expected_wait(self, occupied: float, max_num_seqs: int) -> float:
        excess = occupied + 1 - max_num_seqs
        return 0.0 if excess <= 0 else excess * self.hold_s / max_num_seqs
