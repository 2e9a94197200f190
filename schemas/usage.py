"""One row of llm_usage_events: what a single LLM request cost and how fast it was.

A row exists for every request dispatched to a replica (never for a refusal before one,
see pipeline/router/router.py). Its life: written as `in_flight` (estimated prompt tokens)
before the request is sent, then settled in place (same id and created_at) with what the
replica processed. Settled states, by `error_kind`:

- None (status 200): completed; the replica's own token counts.
- `client_disconnect` (status 499): the caller went away or cancelled; prompt + the output
  streamed up to the cut, charged, never refunded.
- `upstream_error` (502) / the replica's 4xx: failed at the replica; what it processed.
- `abandoned` (no status): the process that sent it died; a later start settles the row
  with what its last progress write saw (pipeline/router/progress.py): the prompt once
  the first token was out and the output streamed until then; nothing if no token was
  seen (vLLM does not count the prompt of a request aborted before its first token).
- `in_flight` (no status): sent and not settled yet.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

IN_FLIGHT = "in_flight"
CLIENT_DISCONNECT = "client_disconnect"
ABANDONED = "abandoned"
CLIENT_CLOSED_STATUS = 499  # nginx's "client closed request"
# The rows whose tokens a model server processed (as a SQL condition on a row).
BILLED_SQL = ("(status_code = 200 OR error_kind IN "
              f"('{CLIENT_DISCONNECT}', '{ABANDONED}', '{IN_FLIGHT}', 'upstream_error'))")


def _now() -> datetime:
    return datetime.now(UTC)


# A plain slots dataclass, not a pydantic model: the router builds two or more per request
# from values it typed itself (nothing to validate), and pydantic's constructor cost 4x
# as much CPU (3.5 µs against 0.9 µs an event: bench/usage_events.py). It is never
# parsed from outside input; `dataclasses.replace` makes a changed copy.
@dataclass(slots=True, kw_only=True)
class UsageEvent:
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    tenant_id: str
    model_name: str
    pool: str
    replica: str
    priority: str = "standard"
    request_id: str
    alert_id: str | None = None
    input_tokens: int
    output_tokens: int
    ttft_ms: int | None = None
    total_latency_ms: int | None = None
    status_code: int | None
    error_kind: str | None = None
    created_at: datetime = field(default_factory=_now)
    # False: refused before reaching any replica (quota, saturation, no healthy replica,
    # context): counted in metrics, never stored as a usage row.
    dispatched: bool = True

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens
