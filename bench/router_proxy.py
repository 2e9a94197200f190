"""One router in a process of its own, serving the OpenAI chat completions API (streamed
SSE) over aiohttp on uvloop, for bench/router_overhead.py to time from outside:

- `ours`: `pipeline.router.Router` (real tokenizer, quota, admission, the default scorers,
  usage events to a sink that drops them), its stream passed on as the gateway does
  (`Router.relay` and `openai_api.relayed_events`: the replica's events relayed);
- `round-robin`: a plain streaming reverse proxy, replicas in turn, the body passed on
  untouched (no token count, no parsing): what any HTTP proxy costs, the floor;
- `litellm`: `litellm.Router` (least-busy), `acompletion(stream=True)`.

All three share this server code, so their differences are the routers'. The process
prints `ready` once it answers; its CPU time is what the bench divides by requests.

Run: `python -m bench.router_proxy --kind ours --port P --upstreams URL[,URL…]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import aiohttp
from aiohttp import web

from pipeline.collector import settle_for_serving

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KINDS = ("ours", "round-robin", "litellm")


class _SseResponse(web.StreamResponse):
    # The headers go out with the first piece of the body, in one write, not in one of
    # their own (aiohttp's own opt-in, as its `Response` does).
    _send_headers_immediately = False


async def _sse(request: web.Request) -> web.StreamResponse:
    response = _SseResponse(headers={"Content-Type": "text/event-stream",
                                     "Cache-Control": "no-cache"})
    await response.prepare(request)
    return response


def refusal(exc: Exception) -> web.Response:
    """A router's refusal (quota, saturation, no replica) as the gateway sends it
    (pipeline/web/errors.py): its HTTP status, Retry-After, the kind in the body — so an
    overloaded router shows as 503s the bench counts, not as 500s."""
    status = int(getattr(exc, "status_code", 500))
    retry = getattr(exc, "retry_after", None)
    headers = {"Retry-After": str(max(1, math.ceil(retry or 1)))} if status in (429, 503) else {}
    return web.json_response({"error": {"message": str(exc),
                                        "code": getattr(exc, "kind", "server_error")}},
                             status=status, headers=headers)


def ours_handler(upstreams: list[str], relay_gather_max_s: float | None = None,
                 ) -> tuple[Handler, Callable[[], Awaitable[None]]]:
    import structlog

    from pipeline.config import Settings
    from pipeline.router import ChatRequest, Router, RouterError
    from pipeline.router.config import PoolConfig, TenantLimits
    from pipeline.router.tokens import counter_for
    from pipeline.runtime import tokenizer_dir
    from pipeline.web.openai_api import relayed_events
    from schemas.usage import UsageEvent

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    class NullSink:
        def record(self, event: UsageEvent) -> None:
            pass

    router = Router(model_name="sim-model", counter=counter_for(tokenizer_dir(Settings())),
                    usage=NullSink(),
                    pools={"default": PoolConfig(
                        endpoints=upstreams, max_context_tokens=8192,
                        relay_gather_max_s=(PoolConfig.model_fields["relay_gather_max_s"].default
                                            if relay_gather_max_s is None
                                            else relay_gather_max_s))},
                    tenants=TenantLimits(tokens_per_minute=10**12, tokens_per_day=10**13))

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        stream = router.relay(ChatRequest(tenant_id="t", messages=body["messages"],
                                          max_tokens=int(body.get("max_tokens") or 16)))
        try:
            first = await anext(stream)  # a refusal raises here, before the 200
        except RouterError as exc:  # as the gateway answers it: its status, Retry-After
            return refusal(exc)
        response = await _sse(request)
        async for piece in relayed_events(stream, first, "sim-model"):
            await response.write(piece)
        await response.write_eof()
        return response

    return handle, router.close


def round_robin_handler(upstreams: list[str],
                        ) -> tuple[Handler, Callable[[], Awaitable[None]]]:
    turn = itertools.cycle([u + "/chat/completions" for u in upstreams])
    sessions: list[aiohttp.ClientSession] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        if not sessions:
            sessions.append(aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=1000, keepalive_timeout=3.0)))
        data = await request.read()
        async with sessions[0].post(next(turn), data=data, headers={
                "Content-Type": "application/json"}) as upstream:
            response = await _sse(request)
            async for piece in upstream.content.iter_any():
                await response.write(piece)
        await response.write_eof()
        return response

    async def close() -> None:
        for session in sessions:
            await session.close()

    return handle, close


def litellm_handler(upstreams: list[str]) -> tuple[Handler, Callable[[], Awaitable[None]]]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    logging.getLogger("LiteLLM").setLevel(logging.ERROR)
    import litellm

    litellm.suppress_debug_info = True
    router = litellm.Router(model_list=[{"model_name": "sim", "litellm_params": {
        "model": "openai/sim-model", "api_base": u, "api_key": "EMPTY"}} for u in upstreams],
        routing_strategy="least-busy", num_retries=0)

    async def handle(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        stream: Any = await router.acompletion(
            model="sim", messages=body["messages"], max_tokens=body.get("max_tokens"),
            stream=True, stream_options={"include_usage": True})
        response = await _sse(request)
        async for part in stream:
            await response.write(f"data: {part.model_dump_json()}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def close() -> None:
        return None

    return handle, close


async def serve(kind: str, port: int, upstreams: list[str],
                relay_gather_max_s: float | None = None) -> None:
    makers: dict[str, Callable[[list[str]], tuple[Handler, Callable[[], Awaitable[None]]]]] = {
        "ours": partial(ours_handler, relay_gather_max_s=relay_gather_max_s),
        "round-robin": round_robin_handler, "litellm": litellm_handler}
    handle, close = makers[kind](upstreams)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", handle)
    app.router.add_get("/health", lambda _: _ok())
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    # As the gateway does once started (pipeline/collector.py): the libraries'
    # long-lived objects out of the collector's scans, gen-0 threshold raised.
    settle_for_serving()
    # A refused or cut request is the bench's to count, not a traceback per request.
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
    print("ready", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await close()
        await runner.cleanup()


async def _ok() -> web.Response:
    return web.Response(text=json.dumps({"status": "ok"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstreams", required=True, help="comma-separated base URLs (…/v1)")
    parser.add_argument("--relay-gather-max-s", type=float, default=None,
                        help="ours: PoolConfig.relay_gather_max_s (default the router's)")
    args = parser.parse_args()
    import uvloop

    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.kind, args.port, args.upstreams.split(","),
                         args.relay_gather_max_s))


if __name__ == "__main__":
    main()
