"""One streamed chat completion against one replica, timed: TTFT and total latency."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai

from pipeline.router.errors import UpstreamError

# Receives each piece of generated text as it arrives (streaming passthrough).
DeltaCallback = Callable[[str], None]


@dataclass(frozen=True)
class Upstream:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: int | None
    latency_ms: int
    finish_reason: str | None


class ReplicaClient:
    """An OpenAI-compatible client bound to one replica's base URL."""

    def __init__(self, base_url: str, *, connect_timeout_s: float, request_timeout_s: float,
                 api_key: str = "EMPTY") -> None:
        # Retries are the router's job (on another replica), not the client's.
        timeout = openai.Timeout(request_timeout_s, connect=connect_timeout_s)
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key,
                                          timeout=timeout, max_retries=0)

    async def chat(self, body: dict[str, Any], on_delta: DeltaCallback | None = None,
                   on_first_token: Callable[[], None] | None = None) -> Upstream:
        """Stream one completion; `on_delta` sees each text piece, `on_first_token` is
        called once when the first piece arrives (prefill done). A failure after a piece
        was passed on cannot be retried elsewhere (the caller already has it): it is
        raised as UpstreamError instead of the client's own error."""
        started = time.perf_counter()
        first_token_at: float | None = None
        parts: list[str] = []
        usage = None
        finish_reason = None
        stream = await self._client.chat.completions.create(
            **body, stream=True, stream_options={"include_usage": True})
        try:
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    if choice.delta.content:
                        if first_token_at is None:
                            first_token_at = time.perf_counter()
                            if on_first_token is not None:
                                on_first_token()
                        parts.append(choice.delta.content)
                        if on_delta is not None:
                            on_delta(choice.delta.content)
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
        except (openai.APIError, openai.APIConnectionError) as exc:
            if on_delta is not None and parts:
                raise UpstreamError(f"stream interrupted: {exc}") from exc
            raise
        ended = time.perf_counter()
        return Upstream(
            text="".join(parts),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            ttft_ms=None if first_token_at is None else round((first_token_at - started) * 1000),
            latency_ms=round((ended - started) * 1000),
            finish_reason=finish_reason,
        )

    async def close(self) -> None:
        await self._client.close()
