"""The OpenAI chat-completions wire format: the request body we accept and the responses
and stream chunks we send.

A streamed answer is the replica's own server-sent events relayed as they came
(`relayed_events` over `Router.relay`), not re-encoded: its chunks are vLLM's (its id,
the model version that served it, running usage in each chunk and a usage chunk at the
end whether or not the caller asked for `include_usage` — clients of the API accept
both). The gateway and bench/router_proxy.py's `ours` share this code."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.router import Completion, RouterError


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str = Field(max_length=200_000)
    name: str | None = Field(default=None, max_length=64)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatCompletionBody(BaseModel):
    """OpenAI parameters we do not act on are ignored, as OpenAI-compatible servers do;
    `max_tokens` is bounded by the gateway's settings (checked by the endpoint)."""

    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def sampling_extras(self) -> dict[str, object]:
        extras: dict[str, object] = {}
        if self.top_p is not None:
            extras["top_p"] = self.top_p
        if self.stop is not None:
            extras["stop"] = self.stop
        if self.seed is not None:
            extras["seed"] = self.seed
        return extras


def usage_block(completion: Completion) -> dict[str, int]:
    return {"prompt_tokens": completion.input_tokens,
            "completion_tokens": completion.output_tokens,
            "total_tokens": completion.input_tokens + completion.output_tokens}


def completion_response(completion: Completion, model: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{completion.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0,
                     "message": {"role": "assistant", "content": completion.text},
                     "finish_reason": completion.finish_reason or "stop"}],
        "usage": usage_block(completion),
    }


def chunk(response_id: str, model: str, created: int, *, delta: dict[str, str] | None = None,
          finish_reason: str | None = None, usage: dict[str, int] | None = None) -> str:
    """One server-sent event holding one chat.completion.chunk."""
    choices = [] if delta is None and finish_reason is None else [
        {"index": 0, "delta": delta or {}, "finish_reason": finish_reason}]
    body: dict[str, Any] = {"id": response_id, "object": "chat.completion.chunk",
                            "created": created, "model": model, "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"


def error_body(message: str, kind: str, *, param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_event(message: str, kind: str) -> str:
    return f"data: {json.dumps(error_body(message, kind))}\n\n"


DONE = "data: [DONE]\n\n"


async def relayed_events(stream: AsyncIterator[bytes | Completion],
                         first: bytes | Completion, model: str) -> AsyncIterator[bytes]:
    """The body of a streamed answer, after `first` (awaited before the 200, so that a
    refusal is still an HTTP status): the relayed bytes; a failure after them ends the
    stream with an error event of our own (the replica's detail stays in our logs)."""
    item = first
    try:
        while isinstance(item, bytes):
            yield item
            item = await anext(stream)
        if item is first:  # the replica sent not one event: the answer from its usage
            yield _events_of(item, model).encode()
    except RouterError:
        yield error_event("the model server failed mid-stream", "upstream_error").encode()
    except StopAsyncIteration:
        yield error_event("the stream ended early", "upstream_error").encode()
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()  # type: ignore[attr-defined]


def _events_of(completion: Completion, model: str) -> str:
    response_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    return (chunk(response_id, model, created, delta={"role": "assistant", "content": ""})
            + chunk(response_id, model, created,
                    finish_reason=completion.finish_reason or "stop")
            + chunk(response_id, model, created, usage=usage_block(completion)) + DONE)
