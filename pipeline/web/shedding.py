"""Load shedding in front of the framework (pure ASGI): a chat completion whose deadline
has passed, or that admission would refuse now (queue full, or the expected wait longer
than what is left of its deadline), is answered 503 + Retry-After, and one of a tenant
whose quota fits no request at all (pipeline/router/quota/blocks.py) 429 + Retry-After,
before FastAPI routes it, resolves dependencies or reads its body: the refusal costs a
header scan, one HMAC of a cached key, a dict lookup and a look at the admission queue.

Only keys in the authenticator's cache (even expired) are judged here (the tenant decides the
admission class); anything else goes on to the endpoint, which makes the same checks after
a full key check.
"""

from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.router.errors import QuotaExceeded
from pipeline.router.metrics import count_rejection
from pipeline.web.auth import CachedKeys
from pipeline.web.bearer import bearer_key
from pipeline.web.deadline import clock_of
from pipeline.web.errors import REFUSAL_HEADER, retry_after
from pipeline.web.openai_api import error_body
from pipeline.web.resources import GatewayResources

CHAT_PATH = "/v1/chat/completions"
_SATURATED = json.dumps(error_body("the model servers are saturated; retry later",
                                   "overloaded_error", code="saturated")).encode()
_OVER_QUOTA = json.dumps(error_body("token quota exceeded; retry later", "rate_limit_error",
                                   code="quota_exceeded")).encode()
_LATE = json.dumps(error_body("the request's deadline passed before it could be served; "
                              "retry later", "overloaded_error")).encode()


class ShedGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" \
                and scope["path"] == CHAT_PATH:
            refusal = self._refusal(scope)
            if refusal is not None:
                await _send_refusal(send, *refusal)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> tuple[int, bytes, str, str] | None:
        """(status, body, Retry-After, reason) of the refusal to send at once, or None."""
        clock = clock_of(scope)
        if clock is None:
            return None
        remaining = clock.remaining(time.monotonic())
        if remaining <= 0:
            count_rejection("deadline_passed")
            return 503, _LATE, "1", "deadline_passed"
        resources: GatewayResources | None = getattr(scope["app"].state, "resources", None)
        if resources is None or resources.shedder is None \
                or not hasattr(resources.auth, "cached_tenant"):
            return None
        auth: CachedKeys = resources.auth  # type: ignore[assignment]
        tenant = _tenant(scope, auth)
        if tenant is None:
            return None
        refusal = resources.shedder.shed(tenant, remaining)
        if refusal is None:
            return None
        # (counted in the rejection metrics by the usage event the router recorded)
        if isinstance(refusal, QuotaExceeded):
            return 429, _OVER_QUOTA, retry_after(refusal.retry_after), "quota_exceeded"
        return 503, _SATURATED, retry_after(refusal.retry_after), refusal.reason


def _tenant(scope: Scope, auth: CachedKeys) -> str | None:
    authorization = acting_for = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            authorization = value
        elif name == b"x-secanalyst-tenant":
            acting_for = value
    if authorization is None or acting_for is not None:  # the endpoint answers these
        return None
    key = bearer_key(authorization.decode("latin-1"))
    if key is None:
        return None
    # A stale entry is fine here: it only decides a refusal, and refusing an expired or
    # revoked key with 503 instead of 401 grants nothing.
    return auth.cached_tenant(key, stale_ok=True)


async def _send_refusal(send: Send, status: int, body: bytes, retry: str,
                        reason: str) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"retry-after", retry.encode()), (REFUSAL_HEADER.lower().encode(), reason.encode())]})
    await send({"type": "http.response.body", "body": body})
