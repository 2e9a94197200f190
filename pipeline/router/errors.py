"""Flow-control outcomes as exceptions that carry data, under one root. The gateway maps
them to HTTP statuses and the consumers to pauses, each in one place."""

from __future__ import annotations


class RouterError(Exception):
    status_code = 500
    kind = "router_error"

    @property
    def outage(self) -> bool:
        """True when the model servers cannot be reached or are failing (a caller should
        wait and retry later, not give up on the request)."""
        return False


class QuotaExceeded(RouterError):
    status_code = 429
    kind = "quota_exceeded"

    def __init__(self, tenant_id: str, retry_after: float, blocked_for: float = 0.0) -> None:
        super().__init__(f"tenant {tenant_id!r} is over its token quota; "
                         f"retry after {retry_after:.1f}s")
        self.tenant_id = tenant_id
        self.retry_after = retry_after
        # Seconds during which not even the smallest request of this tenant fits (0: a
        # smaller request might fit now); lets the router refuse them without counting.
        self.blocked_for = blocked_for


class Saturated(RouterError):
    status_code = 503
    kind = "saturated"

    def __init__(self, retry_after: float, reason: str = "saturated") -> None:
        super().__init__(f"every replica is saturated; retry after {retry_after:.1f}s")
        self.retry_after = retry_after
        # queue_full | deadline | evicted | shed_full | shed_slow (admission's words)
        self.reason = reason


class ContextTooLong(RouterError):
    status_code = 413
    kind = "context_too_long"

    def __init__(self, tokens: int, limit: int) -> None:
        super().__init__(f"request needs {tokens} tokens; the largest pool allows {limit}")
        self.tokens = tokens
        self.limit = limit


class RequestOverQuota(RouterError):
    """The request alone needs more tokens than the tenant may use in a minute (or a
    day): no wait would ever admit it, so it is refused as too large, not 'retry later'."""

    status_code = 413
    kind = "request_over_quota"

    def __init__(self, tenant_id: str, tokens: int, limit: int) -> None:
        super().__init__(f"request needs {tokens} tokens; tenant {tenant_id!r} may use "
                         f"{limit} per window")
        self.tenant_id = tenant_id
        self.tokens = tokens
        self.limit = limit


class NoHealthyReplica(RouterError):
    """No replica of the pool could be tried: every circuit open, or every replica
    failed to connect, reset, timed out or answered 5xx. Nothing was processed."""

    status_code = 503
    kind = "no_healthy_replica"

    @property
    def outage(self) -> bool:
        return True


class UpstreamError(RouterError):
    status_code = 502
    kind = "upstream_error"

    def __init__(self, message: str, *, upstream_status: int | None = None) -> None:
        super().__init__(message)
        # None: the connection or the stream broke (after text was passed on).
        self.upstream_status = upstream_status

    @property
    def outage(self) -> bool:
        return self.upstream_status is None or self.upstream_status >= 500
