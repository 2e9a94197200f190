"""The token-aware LLM router shared by the explain consumer and the gateway.

Counts tokens before dispatch, chooses the pool by context length, dispatches to an
OpenAI-compatible vLLM replica, measures TTFT and latency, and records one usage event
per request.
"""

from pipeline.router.errors import (
    ContextTooLong,
    NoHealthyReplica,
    QuotaExceeded,
    RequestOverQuota,
    RouterError,
    Saturated,
    UpstreamError,
)
from pipeline.router.router import ChatRequest, Completion, Router

__all__ = ["ChatRequest", "Completion", "ContextTooLong", "NoHealthyReplica", "QuotaExceeded",
           "RequestOverQuota",
           "Router", "RouterError", "Saturated", "UpstreamError"]
