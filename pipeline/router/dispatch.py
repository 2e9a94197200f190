"""One streamed chat completion against one replica, timed: TTFT and total latency.

The request is a POST of the OpenAI chat completions API with `stream: true` and
`stream_options.include_usage`, read as server-sent events, over one aiohttp session per
replica (pooled keep-alive connections). Not the openai SDK: profiled in the router at
load (bench/router_overhead.py), the SDK's request building, typed-dict transforms,
pydantic chunk models and httpx transport cost ~1.5–2 ms of CPU per request here, this
~0.15 ms, and the router's CPU per request is what bounds its rate on a small machine.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from pipeline.router.errors import UpstreamError
from pipeline.router.sse_relay import SseRelay, StreamError, StreamProgress, parse_event

__all__ = ["BytesCallback", "DeltaCallback", "ReplicaClient", "StreamProgress", "Upstream"]

# Receives each piece of generated text as it arrives (streaming passthrough).
DeltaCallback = Callable[[str], None]
# Receives the replica's server-sent events, as bytes, as they arrive (relay.py).
BytesCallback = Callable[[bytes], None]

MAX_EVENT_LINE = 16 * 1024 * 1024  # bytes of one SSE line (a chunk of JSON)
MAX_CONNECTIONS = 1000  # per replica, as the openai SDK's pool
# Idle pooled connections are dropped before the server drops them: vLLM's uvicorn closes
# an idle keep-alive connection after 5 s (VLLM_HTTP_TIMEOUT_KEEP_ALIVE), and a request
# written onto a connection the server is closing fails ("Can not write request body").
KEEPALIVE_S = 3.0
# After the first text, a relayed stream is read at most once per RELAY_GATHER_S, the
# interval doubling with each read up to RELAY_GATHER_MAX_S: what the replica wrote
# meanwhile waits in the kernel and goes on as one piece. Each read is a timer, a task
# wake-up, a pause and resume of the socket, a scan and a socket write downstream:
# ~0.1 ms of CPU, as much as the router's own work on the whole request (cProfile,
# bench/router_overhead.py); a 95-token answer 5 ms a token was 24 reads at a fixed
# 20 ms, is 8. A model slower than that (vLLM on CPU: tens of ms a token) is passed on
# token by token; the first text at once; the end of the stream waits for the interval
# under way (≤ RELAY_GATHER_MAX_S: a reader of text sees ≥ 12 updates a second).
# The defaults; per pool: `PoolConfig.relay_gather_s`, `relay_gather_max_s`.
RELAY_GATHER_S = 0.02
RELAY_GATHER_MAX_S = 0.08


class ReplicaError(Exception):
    """The replica did not give a usable completion."""


class ReplicaUnavailable(ReplicaError):
    """Connect error, reset or timeout: another replica may well serve the request."""


class ReplicaStatusError(ReplicaError):
    """The replica answered with an HTTP error status."""

    def __init__(self, message: str, status_code: int, body: object | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class ReplicaServerError(ReplicaStatusError):
    """A 5xx: the replica's own fault, worth a retry elsewhere."""


class ReplicaStreamError(ReplicaError):
    """An error event inside the stream (after a 200)."""


@dataclass(frozen=True)
class Upstream:
    text: str
    prompt_tokens: int | None
    completion_tokens: int | None
    ttft_ms: int | None
    latency_ms: int
    finish_reason: str | None


class ReplicaClient:
    """An OpenAI-compatible chat client bound to one replica's base URL (…/v1).

    Timeouts as the openai SDK's: `connect_timeout_s` for the TCP connect,
    `request_timeout_s` for each read (between bytes) and for waiting for a pooled
    connection. No retries: that is the router's job (on another replica)."""

    def __init__(self, base_url: str, *, connect_timeout_s: float, request_timeout_s: float,
                 api_key: str = "EMPTY", gather_s: float = RELAY_GATHER_S,
                 gather_max_s: float = RELAY_GATHER_MAX_S) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.gather_s, self.gather_max_s = gather_s, gather_max_s  # relay()'s defaults
        self._headers = {"Authorization": f"Bearer {api_key}",
                         "Content-Type": "application/json",
                         "Accept": "text/event-stream"}
        self._timeout = aiohttp.ClientTimeout(total=None, connect=request_timeout_s,
                                              sock_connect=connect_timeout_s,
                                              sock_read=request_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        """The session, made on first use: inside the event loop that uses it."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, headers=self._headers,
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS,
                                               keepalive_timeout=KEEPALIVE_S))
        return self._session

    async def chat(self, body: dict[str, Any], on_delta: DeltaCallback | None = None,
                   on_first_token: Callable[[], None] | None = None,
                   progress: StreamProgress | None = None) -> Upstream:
        """Stream one completion; `on_delta` sees each text piece, `on_first_token` is
        called once when the first piece arrives (prefill done). A failure after a piece
        was passed on cannot be retried elsewhere (the caller already has it): it is
        raised as UpstreamError instead of the client's own error.

        `body` is the request of the chat completions API; its `extra_body` (if any) is
        merged into it, as the openai SDK does. `progress` is kept up to date as chunks
        arrive (read it if this call is cancelled)."""
        started = time.perf_counter()
        progress = progress if progress is not None else StreamProgress()
        first_token_at: float | None = None
        parts: list[str] = []
        usage: dict[str, Any] | None = None
        finish_reason = None
        try:
            async with await self._post(_payload(body)) as response:
                if response.status >= 400:
                    raise await _status_error(response)
                async for chunk in _events(response.content):
                    if isinstance(chunk.get("usage"), dict):
                        usage = chunk["usage"]
                        progress.usage(usage)
                    for choice in chunk.get("choices") or ():
                        content = (choice.get("delta") or {}).get("content")
                        if content:
                            if first_token_at is None:
                                first_token_at = time.perf_counter()
                                if on_first_token is not None:
                                    on_first_token()
                            parts.append(content)
                            progress.chunks += 1
                            if on_delta is not None:
                                on_delta(content)
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
        except (aiohttp.ClientError, TimeoutError, ReplicaStreamError) as exc:
            if on_delta is not None and parts:
                raise UpstreamError(f"stream interrupted: {exc}") from exc
            if isinstance(exc, ReplicaStreamError):
                raise
            raise ReplicaUnavailable(f"{self.url}: {_describe(exc)}") from exc
        ended = time.perf_counter()
        return Upstream(
            text="".join(parts),
            prompt_tokens=usage.get("prompt_tokens") if usage else None,
            completion_tokens=(usage.get("completion_tokens") if usage
                               else progress.chunks if parts else None),
            ttft_ms=None if first_token_at is None else round((first_token_at - started) * 1000),
            latency_ms=round((ended - started) * 1000),
            finish_reason=finish_reason,
        )

    async def relay(self, body: dict[str, Any], on_bytes: BytesCallback,
                    on_first_token: Callable[[], None] | None = None,
                    progress: StreamProgress | None = None,
                    gather_s: float | None = None,
                    gather_max_s: float | None = None) -> Upstream:
        """As `chat`, but the caller gets the replica's server-sent events as the bytes
        that came (`on_bytes`), from the first text on (sse_relay.py: what comes before
        it is held back, so a failure there can still be retried elsewhere), gathered
        over `gather_s` after the first text, twice that after the next read, … up to
        `gather_max_s` (or `gather_s`, if more; unset: the client's); the Upstream has no
        text. Parsed only as far as metering needs."""
        started = time.perf_counter()
        gather_s = self.gather_s if gather_s is None else gather_s
        gather_max_s = self.gather_max_s if gather_max_s is None else gather_max_s
        relay = SseRelay(progress if progress is not None else StreamProgress())
        try:
            async with await self._post(_payload(body)) as response:
                if response.status >= 400:
                    raise await _status_error(response)
                transport = response.connection.transport if response.connection else None
                gather = None if gather_s <= 0 else _Gather(
                    response.content, transport, gather_s, max(gather_s, gather_max_s))
                await _relay_body(response.content, relay, on_bytes, on_first_token, gather)
                rest = relay.flush()
                if rest:
                    on_bytes(rest)
        except StreamError as exc:  # before the first text: nothing passed on
            raise ReplicaStreamError(str(exc)) from exc
        except (aiohttp.ClientError, TimeoutError, ReplicaStreamError) as exc:
            if relay.passed_on:
                raise UpstreamError(f"stream interrupted: {exc}") from exc
            if isinstance(exc, ReplicaStreamError):
                raise
            raise ReplicaUnavailable(f"{self.url}: {_describe(exc)}") from exc
        return _relayed(relay, started)

    async def _post(self, data: str) -> aiohttp.ClientResponse:
        """POST, once more on a fresh connection if the pooled one was closed under the
        request before any answer: the server never read it, so the retry runs it once."""
        try:
            return await self._open().post(self.url, data=data)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            if isinstance(exc, aiohttp.ClientConnectorError):  # a new connection failed
                raise
            return await self._open().post(self.url, data=data)

    async def probe(self, timeout_s: float = 2.0) -> str | None:
        """None when the replica's /health answers 2xx, else why not (for readiness)."""
        url = self.url.removesuffix("/chat/completions").removesuffix("/v1") + "/health"
        try:
            async with self._open().get(url, timeout=aiohttp.ClientTimeout(
                    total=timeout_s)) as response:
                if response.status < 300:
                    return None
                return f"/health answered {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return _describe(exc)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


async def _events(content: aiohttp.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """The JSON of each server-sent event's data until `[DONE]` or the end; an event
    carrying an `error` raises ReplicaStreamError."""
    data: list[bytes] = []
    while True:
        line = await content.readline(max_line_length=MAX_EVENT_LINE)
        if not line:  # end of the body
            break
        line = line.rstrip(b"\r\n")
        if line:
            if line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            continue  # other fields (event:, id:, comments) are not used by the API
        if not data:
            continue
        raw = b"\n".join(data)
        data = []
        if raw.startswith(b"[DONE]"):
            return
        try:
            event = parse_event(raw)
        except StreamError as exc:
            raise ReplicaStreamError(str(exc)) from exc
        if event is not None:
            yield event


async def _relay_body(content: aiohttp.StreamReader, relay: SseRelay, on_bytes: BytesCallback,
                      on_first_token: Callable[[], None] | None,
                      gather: _Gather | None) -> None:
    """Read to the end — past `[DONE]` too: a body left unread closes the pooled
    connection instead of reusing it — passing on what the relay lets through."""
    while piece := await content.readany():
        first = relay.first_token_at is None
        out = relay.feed(piece)
        if first and relay.first_token_at is not None and on_first_token is not None:
            on_first_token()
        if out:
            on_bytes(out)
        if relay.error is not None:
            raise ReplicaStreamError(relay.error)
        if gather is not None and relay.passed_on:
            await gather.wait()


class _Gather:
    """Waits between reads of a stream — `first_s`, then twice as long each time up to
    `max_s` — or less if it ends meanwhile. From the second wait on (a stream that goes
    on), the socket is not even read meanwhile: the kernel keeps what comes and one read
    takes it all, instead of a wake-up of the event loop per token; the end of such a
    stream then waits for the interval."""

    def __init__(self, content: aiohttp.StreamReader, transport: asyncio.Transport | None,
                 first_s: float, max_s: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._waiting: asyncio.Future[None] | None = None
        content.on_eof(self._wake)
        self._content = content
        self._transport = transport
        self._waits = 0
        self._next_s = first_s
        self._max_s = max_s

    async def wait(self) -> None:
        if self._content.is_eof():  # (its callback already ran)
            # One pass of the event loop all the same: the caller passes the text on
            # now, before this request's bookkeeping (usage event, quota) — a short
            # answer often comes whole in one read, and that was on its first token.
            await asyncio.sleep(0)
            return
        wait, self._next_s = self._next_s, min(self._max_s, 2 * self._next_s)
        self._waits += 1
        paused = self._waits > 1 and self._transport is not None \
            and not self._transport.is_closing()
        self._waiting = self._loop.create_future()
        timer = self._loop.call_later(wait, self._wake)
        try:
            if paused:
                assert self._transport is not None
                self._transport.pause_reading()
            await self._waiting
        finally:
            timer.cancel()
            self._waiting = None
            if paused and self._transport is not None and not self._transport.is_closing():
                self._transport.resume_reading()

    def _wake(self) -> None:
        if self._waiting is not None and not self._waiting.done():
            self._waiting.set_result(None)


def _payload(body: dict[str, Any]) -> str:
    """The request as sent: streamed, with running usage in every chunk (a cut stream is
    metered from it), `extra_body` merged in as the openai SDK does."""
    payload = {**body, "stream": True,
               "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
    payload.update(payload.pop("extra_body", None) or {})
    return json.dumps(payload)


def _relayed(relay: SseRelay, started: float) -> Upstream:
    progress, first = relay.progress, relay.first_token_at
    completion = progress.completion_tokens
    return Upstream(
        text="", prompt_tokens=progress.prompt_tokens,
        completion_tokens=completion if completion is not None else (
            progress.chunks if first is not None else None),
        ttft_ms=None if first is None else round((first - started) * 1000),
        latency_ms=round((time.perf_counter() - started) * 1000),
        finish_reason=relay.finish_reason)


async def _status_error(response: aiohttp.ClientResponse) -> ReplicaStatusError:
    text = await response.text(errors="replace")
    try:
        body: object = json.loads(text)
    except ValueError:
        body = text
    if isinstance(body, dict) and "error" in body:
        body = body["error"]
    kind = ReplicaServerError if response.status >= 500 else ReplicaStatusError
    return kind(f"Error code: {response.status} - {body}", response.status, body)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return "request timed out"
    return str(exc) or type(exc).__name__
