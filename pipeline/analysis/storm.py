"""Storm de-duplication: one incident, one LLM call.

Real Wazuh traffic is dominated by storms — one brute force fires the same rule thousands
of times. An alert whose fingerprint (rule + agent + incident entities) already has an
original verdict within the window reuses it; so does a near-duplicate — the same rule and
incident entities on another agent — whose text embedding is close enough. A reuse costs
zero tokens and bumps the original's counter. Escalation (a higher rule level than the
original's) always gets a fresh verdict.

Under concurrency the database alone cannot de-duplicate: the alerts of one incident on
30 agents have 30 fingerprints, run at once, and none finds a verdict because none has
stored one yet. `InFlight` is the single-flight: an alert that would reuse the verdict of
an LLM call already in flight (same incident and fingerprint, or close enough text, no
escalation) waits for it, then takes the normal reuse path.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import numpy as np
from psycopg import AsyncConnection

from pipeline.analysis.facts import build_facts
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
    # The facts are this alert's own (its user, source, time), never the original's.
    facts = build_facts(alert)
    shown = (facts.sentence if original.provenance.get("summary") != "model"
             else original.summary)
    return original.model_copy(update={
        "facts": facts, "summary": shown,
        "alert_id": alert.alert_id, "rule_level": alert.rule_level,
        "fingerprint": alert.fingerprint, "incident_key": alert.incident_key,
        "status": "reused", "reused_from": original.alert_id,
        "input_tokens": 0, "output_tokens": 0, "latency_ms": 0, "created_at": None,
        "provenance": {**original.provenance, "reused_from": original.alert_id,
                       "match": match},
    })


COMPLETION_BUCKETS = 4096


@dataclass
class Flight:
    """One LLM call in flight for an alert: what would reuse its verdict, and when done."""

    alert: NormalizedAlert
    unit_embedding: np.ndarray | None
    done: asyncio.Event = field(default_factory=asyncio.Event)


def _unit(embedding: np.ndarray | None) -> np.ndarray | None:
    if embedding is None or not embedding.size:
        return None
    norm = float(np.linalg.norm(embedding))
    return None if norm == 0 else embedding / norm


class InFlight:
    """Single-flight per incident, within one process.

    Across processes: the Kafka key (tenant + fingerprint) keeps each fingerprint on one
    partition, but the fingerprints of one incident (one per agent) spread over the
    partitions, so each consumer process holding some of them may make one call of its
    own at the same time — at most one per process per incident, not one per alert; the
    alerts after those calls reuse the stored verdicts through the database."""

    def __init__(self, policy: StormSettings) -> None:
        self._policy = policy
        self._flights: dict[tuple[str, str], list[Flight]] = defaultdict(list)
        # Finished calls counted in hashed buckets: fixed memory however many incidents;
        # two incidents sharing a bucket only cost one more look in the database.
        self._completed = [0] * COMPLETION_BUCKETS

    @staticmethod
    def _key(alert: NormalizedAlert) -> tuple[str, str]:
        return alert.tenant_id, alert.incident_key or f"fingerprint:{alert.fingerprint}"

    def leader_for(self, alert: NormalizedAlert,
                   embedding: np.ndarray | None) -> Flight | None:
        """The call in flight whose verdict `find_reusable` would give this alert, if any
        (the same tests as there: fingerprint, or incident + similarity; no escalation)."""
        if not self._policy.enabled:
            return None
        unit = _unit(embedding)
        for flight in self._flights.get(self._key(alert), ()):
            if alert.rule_level > flight.alert.rule_level:
                continue
            if flight.alert.fingerprint == alert.fingerprint:
                return flight
            if (unit is not None and flight.unit_embedding is not None and alert.incident_key
                    and float(unit @ flight.unit_embedding)
                    >= self._policy.near_duplicate_similarity):
                return flight
        return None

    def completions(self, alert: NormalizedAlert) -> int:
        """How many calls of this alert's incident have finished: if it changed while the
        alert looked in the database, a verdict may have landed after the look."""
        return self._completed[hash(self._key(alert)) % COMPLETION_BUCKETS]

    @asynccontextmanager
    async def lead(self, alert: NormalizedAlert,
                   embedding: np.ndarray | None) -> AsyncIterator[Flight]:
        """Hold the flight while the LLM call runs and its verdict is stored."""
        key = self._key(alert)
        flight = Flight(alert, _unit(embedding))
        self._flights[key].append(flight)
        try:
            yield flight
        finally:
            self._flights[key].remove(flight)
            if not self._flights[key]:
                del self._flights[key]
            self._completed[hash(key) % COMPLETION_BUCKETS] += 1
            flight.done.set()

    def in_flight(self) -> int:
        return sum(len(flights) for flights in self._flights.values())
