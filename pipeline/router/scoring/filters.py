"""Filters: a replica that fails any of them is not a candidate."""

from __future__ import annotations

from pipeline.router.replicas import Replica
from pipeline.router.scoring.base import PickContext


class CircuitClosed:
    """Healthy: its circuit breaker is closed (or half-open after the cooldown)."""

    def keep(self, replica: Replica, ctx: PickContext) -> bool:
        return replica.circuit.allows(ctx.now)


class ContextFits:
    """The request (prompt + max output) fits the replica's context window."""

    def keep(self, replica: Replica, ctx: PickContext) -> bool:
        return ctx.needed_tokens <= ctx.max_context_tokens


class NotExcluded:
    """Not already tried for this request (a retry goes elsewhere)."""

    def keep(self, replica: Replica, ctx: PickContext) -> bool:
        return replica.url not in ctx.exclude
