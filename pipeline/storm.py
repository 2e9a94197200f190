"""Storm de-duplication: one incident, one LLM call.

Real Wazuh traffic is dominated by storms — one brute force fires the same rule thousands
of times. An alert whose fingerprint (rule + agent + incident entities) already has an
original verdict within the window reuses it; so does a near-duplicate — the same rule and
incident entities on another agent — whose text embedding is close enough. A reuse costs
zero tokens and bumps the original's counter. Escalation (a higher rule level than the
original's) always gets a fresh verdict.
"""

from __future__ import annotations

import numpy as np
from psycopg import AsyncConnection

from pipeline.config import StormSettings
from pipeline.store.verdicts import nearest_original, recent_original
from schemas.messages import NormalizedAlert
from schemas.verdict import Verdict


def escalates(alert: NormalizedAlert, original: Verdict) -> bool:
    return alert.rule_level > original.rule_level


async def find_reusable(conn: AsyncConnection, alert: NormalizedAlert,
                        embedding: np.ndarray | None,
                        policy: StormSettings) -> tuple[Verdict, str] | None:
    """(original verdict, how it matched) or None when a fresh verdict is needed."""
    if not policy.enabled:
        return None
    original = await recent_original(conn, alert.tenant_id, alert.fingerprint, policy.window_s)
    if original is not None:
        return (None if escalates(alert, original) else (original, "fingerprint"))
    if embedding is None or not alert.incident_key:
        return None
    near = await nearest_original(conn, alert.tenant_id, alert.incident_key, embedding,
                                  policy.window_s, policy.near_duplicate_similarity)
    if near is None or escalates(alert, near[0]):
        return None
    return near[0], f"near-duplicate (cosine {near[1]:.3f})"


def reuse_verdict(alert: NormalizedAlert, original: Verdict, match: str) -> Verdict:
    return original.model_copy(update={
        "alert_id": alert.alert_id, "rule_level": alert.rule_level,
        "fingerprint": alert.fingerprint, "incident_key": alert.incident_key,
        "status": "reused", "reused_from": original.alert_id,
        "input_tokens": 0, "output_tokens": 0, "latency_ms": 0, "created_at": None,
        "provenance": {**original.provenance, "reused_from": original.alert_id,
                       "match": match},
    })
