"""Every refusal of the gateway becomes an HTTP answer here, in one place: router outcomes
(quota, saturation, context, upstream), request validation and authentication. Messages
say what the caller can act on and nothing about our internals."""

from __future__ import annotations

import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from pipeline.router import errors as router
from pipeline.router.metrics import count_rejection
from pipeline.web.openai_api import error_body


class GatewayError(Exception):
    """A refusal decided by the gateway itself (before the router)."""

    def __init__(self, status_code: int, message: str, kind: str, *,
                 param: str | None = None, headers: dict[str, str] | None = None,
                 reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason  # the rejection metric's label (default: kind)
        self.status_code = status_code
        self.message = message
        self.kind = kind
        self.param = param
        self.headers = headers or {}


def unauthorized() -> GatewayError:
    # One message for a missing, malformed, unknown or revoked key: no oracle.
    return GatewayError(401, "invalid or missing API key", "authentication_error",
                        headers={"WWW-Authenticate": "Bearer"})


def forbidden() -> GatewayError:
    return GatewayError(403, "this API key is not allowed to do that", "permission_error")


def invalid(param: str, message: str) -> GatewayError:
    return GatewayError(422, f"{param}: {message}", "invalid_request_error", param=param)


def deadline_passed() -> GatewayError:
    """The request's wait budget ran out before it could be admitted (503)."""
    return GatewayError(503, "the request's deadline passed before it could be served; "
                        "retry later", "overloaded_error",
                        headers={"Retry-After": "1", REFUSAL_HEADER: "deadline_passed"},
                        reason="deadline_passed")


REFUSAL_HEADER = "X-Secanalyst-Refusal"


def retry_after(seconds: float) -> str:
    """Retry-After is whole seconds (RFC 9110): round up, never 0."""
    return str(max(1, math.ceil(seconds)))


def router_error_response(exc: router.RouterError) -> JSONResponse:
    headers: dict[str, str] = {}
    if isinstance(exc, router.QuotaExceeded):
        message, kind = "token quota exceeded; retry later", "rate_limit_error"
        headers["Retry-After"] = retry_after(exc.retry_after)
    elif isinstance(exc, router.Saturated):
        message, kind = "the model servers are saturated; retry later", "overloaded_error"
        headers["Retry-After"] = retry_after(exc.retry_after)
        # Why: refused on arrival (queue_full, shed_*) or after waiting (deadline,
        # evicted by a higher class) — the caller's retry strategy may differ.
        headers[REFUSAL_HEADER] = exc.reason
    elif isinstance(exc, router.NoHealthyReplica):
        message, kind = "no model server is available; retry later", "overloaded_error"
        headers["Retry-After"] = "1"
    elif isinstance(exc, router.ContextTooLong):
        message = (f"the request needs {exc.tokens} tokens (prompt + max_tokens); "
                   f"the limit is {exc.limit}")
        kind = "context_length_exceeded"
    elif isinstance(exc, router.RequestOverQuota):
        message = (f"the request needs {exc.tokens} tokens (prompt + max_tokens); the "
                   f"tenant's quota allows {exc.limit} per window")
        kind = "quota_too_small"
    elif isinstance(exc, router.UpstreamError):
        message, kind = "the model server failed to answer", "upstream_error"
    else:
        message, kind = "internal error", "server_error"
    return JSONResponse(error_body(message, kind, code=exc.kind),
                        status_code=exc.status_code, headers=with_retry_after(
                            exc.status_code, headers))


def with_retry_after(status_code: int, headers: dict[str, str]) -> dict[str, str]:
    """Every 429 and 503 tells the caller when to come back (1 s when nothing better is
    known)."""
    if status_code in (429, 503) and "Retry-After" not in headers:
        return {**headers, "Retry-After": "1"}
    return headers


def install_error_handlers(app: FastAPI) -> None:
    async def on_router_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, router.RouterError)
        return router_error_response(exc)

    async def on_gateway_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        count_rejection(exc.reason or exc.kind)
        return JSONResponse(error_body(exc.message, exc.kind, param=exc.param),
                            status_code=exc.status_code,
                            headers=with_retry_after(exc.status_code, exc.headers))

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        count_rejection("invalid_request")
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":
            return JSONResponse(error_body("the body is not valid JSON",
                                           "invalid_request_error"), status_code=400)
        loc = [str(part) for part in first.get("loc", ()) if part != "body"]
        param = ".".join(loc) or None
        message = f"{param}: {first.get('msg', 'invalid')}" if param else "invalid request"
        return JSONResponse(error_body(message, "invalid_request_error", param=param),
                            status_code=422)

    app.add_exception_handler(router.RouterError, on_router_error)
    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
