"""The token-aware LLM router shared by the explain consumer and the gateway; a library
that imports nothing else of `pipeline` (README.md here).

Counts tokens before dispatch, chooses the pool by context length, dispatches to an
OpenAI-compatible vLLM replica, measures TTFT and latency, and records one usage event
per request.
"""

from pipeline.router.build import build_router
from pipeline.router.config import (
    AdmissionConfig,
    PoolConfig,
    QuotaBackend,
    RouterConfig,
    ScoringConfig,
    TenantLimits,
    TenantQuota,
)
from pipeline.router.errors import (
    ContextTooLong,
    NoHealthyReplica,
    QuotaExceeded,
    RequestOverQuota,
    RouterError,
    Saturated,
    UpstreamError,
)
from pipeline.router.router import Router
from pipeline.router.types import ChatRequest, Completion

__all__ = ["AdmissionConfig", "ChatRequest", "Completion", "ContextTooLong", "NoHealthyReplica",
           "PoolConfig", "QuotaBackend", "QuotaExceeded", "RequestOverQuota", "Router",
           "RouterConfig", "RouterError", "Saturated", "ScoringConfig", "TenantLimits",
           "TenantQuota", "UpstreamError", "build_router"]
