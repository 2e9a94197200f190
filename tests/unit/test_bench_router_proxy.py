"""The bench's router process answers a refusal as the gateway does (its status and
Retry-After), so an overloaded router is counted as 503s, not as crashes (500)."""

from __future__ import annotations

import json

from bench.router_proxy import refusal
from pipeline.router.errors import NoHealthyReplica, QuotaExceeded, Saturated


def test_a_saturated_router_answers_503_with_retry_after_rounded_up() -> None:
    response = refusal(Saturated(2.2, reason="queue_full"))
    assert response.status == 503
    assert response.headers["Retry-After"] == "3"
    assert json.loads(response.text or "")["error"]["code"] == "saturated"


def test_quota_and_no_replica_refusals_keep_their_status() -> None:
    assert refusal(QuotaExceeded("t", 0.1)).status == 429
    assert refusal(QuotaExceeded("t", 0.1)).headers["Retry-After"] == "1"
    assert refusal(NoHealthyReplica("no replica")).status == 503
