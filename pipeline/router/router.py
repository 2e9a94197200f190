"""Router: count → choose pool → reserve quota → admission → choose replica → dispatch
(retry elsewhere) → settle quota → record.

Metering (what the usage table and the quota are charged):

- A request dispatched to a replica gets one usage row, whatever happens after: reserved
  (`in_flight`, estimated prompt) before it is sent, settled in place when it ends —
  completed, failed at the replica, or cut by its caller (cancelled coroutine, stream
  closed, client disconnected: `client_disconnect`). The tokens are those the replica
  processed up to the end or the cut: its prompt and the output streamed so far (vLLM's
  running counts in each chunk); the quota is settled with the same, never refunded. A
  process killed mid-call leaves the row in flight, holding the prompt (once the first
  token is out) and the output streamed up to the last progress write
  (router/progress.py); the next start of a usage writer settles it as `abandoned` with
  those — a row without output bills nothing, as vLLM counts it (store/usage.py).
- A request refused before reaching any replica — quota (429), admission saturated (503),
  context or quota too small (413), no healthy replica (503: circuit open, or every
  replica failed to connect / answered 5xx) — gets no usage row: it is counted in the
  `secanalyst_llm_rejections{reason}` metric, and its quota reservation is given back
  (nothing was processed). A consumer retrying through an outage thus writes no row per
  retry.

Outage, for callers that should wait rather than give up (`RouterError.outage`):
`NoHealthyReplica` (no replica reachable or healthy) and `UpstreamError` whose
`upstream_status` is None (connection or stream broken mid-way) or ≥ 500.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

import structlog

import pipeline.router.errors as errors
from pipeline.router.admission import CLASSES, Admission, SlotHandle, effective_priority
from pipeline.router.config import DEFAULT_SCORER_WEIGHTS, PoolConfig, TenantLimits
from pipeline.router.discovery import Discovery
from pipeline.router.dispatch import (
    BytesCallback,
    DeltaCallback,
    ReplicaClient,
    ReplicaServerError,
    ReplicaStatusError,
    ReplicaStreamError,
    ReplicaUnavailable,
    StreamProgress,
    Upstream,
)
from pipeline.router.fleet import Fleet
from pipeline.router.metering import Call, Meter, PendingPrefill, UsageRecorder
from pipeline.router.peers import RouterPeers
from pipeline.router.quota import (
    MemoryQuotaStore,
    QuotaLimits,
    QuotaStore,
    RedisQuotaStore,
    Reservation,
    resolve_limits,
)
from pipeline.router.quota.blocks import QuotaBlocks
from pipeline.router.replicas import Pool, choose_pool
from pipeline.router.rollout import checked_split, other_versions, served_model, versions_to_try
from pipeline.router.scoring import ReplicaPicker, build_picker
from pipeline.router.scoring.picker import Choice
from pipeline.router.streaming import relay_completion, stream_completion
from pipeline.router.tokens import TokenCounter
from pipeline.router.tracing import dispatch_span
from pipeline.router.types import ChatRequest, Completion
from pipeline.router.usage import UsageSink

__all__ = ["ChatRequest", "Completion", "Router", "smallest_request_tokens"]

log = structlog.get_logger(__name__)
# One attempt's call of a replica client: (client, body, on first token, progress).
Send = Callable[[ReplicaClient, dict[str, Any], Callable[[], None], StreamProgress],
                Awaitable[Upstream]]


def _sender(on_delta: DeltaCallback | None, on_bytes: BytesCallback | None) -> Send:
    """Parsed text pieces to `on_delta`, or the replica's events relayed to `on_bytes`."""
    if on_bytes is not None:
        return lambda client, body, first, progress: client.relay(body, on_bytes, first,
                                                                   progress)
    return lambda client, body, first, progress: client.chat(body, on_delta, first, progress)


def smallest_request_tokens(counter: TokenCounter) -> int:
    """Prompt + output tokens of the smallest request there can be: one empty message of
    whichever role the chat template renders shortest (a template may add a default
    system prompt to a chat without one), one output token, less one token of slack for
    a merge at the template's edge."""
    sizes = []
    for role in ("system", "user", "assistant"):
        try:
            sizes.append(counter.count_chat([{"role": role, "content": ""}]))
        except Exception:  # a template may refuse a role on its own
            continue
    return max(1, min(sizes, default=1))


class Router:
    def __init__(self, *, model_name: str, pools: Mapping[str, PoolConfig],
                 counter: TokenCounter, usage: UsageSink, connect_timeout_s: float = 5.0,
                 request_timeout_s: float = 120.0, quota: QuotaStore | None = None,
                 admission: Admission | None = None,
                 tenants: TenantLimits | None = None,
                 picker: ReplicaPicker | None = None,
                 discovery: Mapping[str, Discovery] | None = None,
                 progress_interval_s: float = 1.0,
                 peers: RouterPeers | None = None) -> None:
        self.model_name = model_name
        self._quota: QuotaStore = quota if quota is not None else MemoryQuotaStore()
        self._admission = admission if admission is not None else Admission()
        self._tenants = tenants if tenants is not None else TenantLimits()
        self._counter = counter
        self._recorder = UsageRecorder(model_name, usage, progress_interval_s)
        self._fleet = Fleet(pools, connect_timeout_s=connect_timeout_s,
                            request_timeout_s=request_timeout_s, discovery=discovery)
        self._pools = self._fleet.pools
        # Filters + weighted scorers (pipeline/router/scoring); default: scrape /metrics.
        self._picker = picker if picker is not None else build_picker(
            DEFAULT_SCORER_WEIGHTS, list(self._fleet.clients))
        self._fleet.on_change = self._picker.track
        self._blocks = QuotaBlocks()
        # A tenant that cannot fit even the smallest request is refused without counting
        # (see quota/blocks.py).
        self._floor_tokens = smallest_request_tokens(counter)
        self._version_rng = random.Random()  # draws each request's model version
        # The other routers sharing the replicas (peers.py): this one's admission share.
        self._peers = peers

    def set_traffic_split(self, pool: str, weights: Mapping[str, float]) -> None:
        """Shift a pool's traffic between model versions now (rollout, rollback:
        rollout.py); `{}` ends versioning. Requests in flight finish where they are."""
        split = checked_split(weights)
        self._pool_named(pool).traffic_split = split
        log.info("traffic_split_set", pool=pool, split=split)

    def traffic_split(self, pool: str) -> dict[str, float]:
        return dict(self._pool_named(pool).traffic_split)

    def _pool_named(self, name: str) -> Pool:
        for pool in self._pools:
            if pool.name == name:
                return pool
        raise ValueError(f"no pool {name!r}")

    def count_text(self, text: str) -> int:
        """Tokens of a piece of prompt text (for packing context into a budget)."""
        return self._counter.count_text(text)

    def estimate(self, request: ChatRequest) -> tuple[int, int]:
        """(prompt tokens, prompt + max output tokens) before anything is sent."""
        prompt = self._counter.count_chat(request.messages)
        return prompt, prompt + request.max_tokens

    def shed(self, tenant_id: str,
             wait_budget_s: float | None = None) -> errors.QuotaExceeded | errors.Saturated | None:
        """Before counting tokens: the refusal a standard request of this tenant would get
        now, else None — QuotaExceeded while the tenant's quota fits no request at all
        (quota/blocks.py), Saturated when admission would refuse it in every pool (queue
        full, or the expected wait over `wait_budget_s`). Cheap: no tokenization, no quota
        call. A refusal is counted in the rejection metric (no usage row), like any other."""
        limits = resolve_limits(self._tenants, tenant_id)
        priority = effective_priority(limits.priority, "standard")
        refusal: errors.QuotaExceeded | errors.Saturated | None = self._blocked(tenant_id)
        if refusal is None:
            for pool in self._pools:
                refusal = self._admission.would_refuse(pool, priority, wait_budget_s)
                if refusal is None:
                    return None
        if refusal is not None:
            self._recorder.failed(Call(ChatRequest(tenant_id=tenant_id, messages=[],
                                                   max_tokens=0, priority=priority)), refusal)
        return refusal

    def _blocked(self, tenant_id: str) -> errors.QuotaExceeded | None:
        left = self._blocks.remaining(tenant_id, time.monotonic())
        return errors.QuotaExceeded(tenant_id, left, left) if left > 0 else None

    async def complete(self, request: ChatRequest, *, on_delta: DeltaCallback | None = None,
                       on_bytes: BytesCallback | None = None) -> Completion:
        """count → pool → reserve quota → admission slot → replica → dispatch → settle.

        `on_delta` receives the text as it is generated (see `stream`); or `on_bytes` the
        replica's server-sent events as they came (see `relay`: the Completion then has
        no text). Cancelling this
        coroutine after the request was sent settles its row and quota with what the
        replica processed up to then (see the module's docstring)."""
        await self._fleet.discover()
        if self._peers is not None:
            await self._peers.start()
        call = Call(request)
        deadline = None if request.deadline_s is None else time.monotonic() + request.deadline_s
        limits = resolve_limits(self._tenants, request.tenant_id)
        call.request = replace(request, priority=effective_priority(limits.priority,
                                                                    request.priority))
        pool, reservation = await self._admit(call, limits)
        meter = Meter()
        used_tokens = 0  # settled with what was processed; 0 releases it all
        try:
            async with self._admission.slot(pool, call.request.priority, request.tenant_id,
                                            deadline) as slot:
                completion = await self._dispatch(call, pool, _sender(on_delta, on_bytes),
                                                  slot, meter)
            # The answer's own tokens, and those of attempts that broke after their first
            # token (charged, not in the answer's usage).
            used_tokens = (completion.input_tokens + completion.output_tokens
                           + meter.spent_input + meter.spent_output)
            return completion
        except errors.Saturated as exc:  # refused by admission: the queue is full or too slow
            self._recorder.failed(call, exc)
            raise
        except errors.RouterError:  # recorded by _dispatch with what the replicas processed
            used_tokens = sum(meter.processed(call.estimated))
            raise
        except asyncio.CancelledError:  # the caller went away: charge what was done
            used_tokens = self._recorder.cut(call, meter)
            raise
        except Exception as exc:  # a bug or an unforeseen error: the row is still settled
            if meter.created_at is not None:
                used_tokens = sum(meter.processed(call.estimated))
                self._recorder.failed(call, errors.UpstreamError(f"unexpected: {exc!r}"),
                                      meter.replica, meter)
            raise
        finally:
            self._recorder.settled(meter)
            # Shielded: a second cancellation must not lose the settlement.
            await asyncio.shield(self._settle(reservation, used_tokens))

    async def _admit(self, call: Call, limits: QuotaLimits) -> tuple[Pool, Reservation]:
        """Before any replica: the tenant not blocked, the prompt counted, a pool whose
        context fits, the quota reserved. A refusal is recorded (no row) and raised."""
        tenant_id = call.request.tenant_id
        blocked = self._blocked(tenant_id)
        if blocked is not None:  # no request of this tenant fits: do not even count
            self._recorder.failed(call, blocked)
            raise blocked
        call.estimated, call.needed = self.estimate(call.request)
        try:
            pool = choose_pool(self._pools, call.needed)
        except errors.RouterError as exc:
            self._recorder.failed(call, exc)
            raise
        call.pool = pool.name
        try:
            window = min(limits.tokens_per_minute, limits.tokens_per_day)
            if call.needed > window:  # would wait forever: refuse as too large instead
                raise errors.RequestOverQuota(tenant_id, call.needed, window)
            reservation = await self._quota.reserve(tenant_id, call.needed, limits,
                                                    floor_tokens=self._floor_tokens)
        except errors.RouterError as exc:
            if isinstance(exc, errors.QuotaExceeded) and exc.blocked_for > 0:
                self._blocks.block(tenant_id, time.monotonic() + exc.blocked_for)
            self._recorder.failed(call, exc)
            raise
        return pool, reservation

    async def _settle(self, reservation: Reservation, used_tokens: int) -> None:
        try:
            await self._quota.settle(reservation, used_tokens)
            if used_tokens < reservation.tokens:
                self._blocks.lift(reservation.tenant_id)  # the refund may fit a request
        except Exception:
            log.exception("quota_settle_failed", tenant_id=reservation.tenant_id)

    async def _dispatch(self, call: Call, pool: Pool, send: Send,
                        slot: SlotHandle | None, meter: Meter) -> Completion:
        """Choose a replica and send; on connect errors / 5xx retry on another one."""
        tried: set[str] = set()
        body = self._body(call.request)
        if pool.priority_scheduling:
            body["priority"] = CLASSES.index(call.request.priority)
        # A versioned pool: the drawn version's replicas only, then the fallbacks.
        versions = versions_to_try(
            pool.traffic_split, self._version_rng,
            call.request.tenant_id if pool.sticky_versions else None)
        while True:
            others = other_versions(pool, versions[0], self.model_name) if versions else set()
            try:
                choice = self._picker.choose(pool, needed_tokens=call.needed,
                                             prompt_tokens=call.estimated,
                                             messages=call.request.messages,
                                             exclude=tried | others)
            except errors.NoHealthyReplica as exc:
                if len(versions) > 1:
                    versions.pop(0)
                    continue
                self._recorder.unserved(call, exc, meter)
                raise
            # The request names the model the replica serves (its version of a rollout),
            # and so does its usage row from its reservation on.
            call.model = served_model(choice.replica, self.model_name)
            if meter.created_at is None:  # the row exists before anything is sent
                await self._recorder.reserve(call, choice.replica.url, meter)
            tried.add(choice.replica.url)
            upstream = await self._attempt(call, choice, body, send, slot, meter,
                                           attempt=len(tried))
            if upstream is not None:
                return self._recorder.finished(call, choice.replica, upstream, meter)

    async def _attempt(self, call: Call, choice: Choice, body: dict[str, Any],
                       send: Send, slot: SlotHandle | None,
                       meter: Meter, *, attempt: int) -> Upstream | None:
        """Send to one replica. None when it failed in a way another may not (connect
        error, 5xx, stream broken before any text): the caller tries the next."""
        replica = choice.replica
        replica.in_flight_requests += 1
        replica.in_flight_tokens += call.needed
        # Queued prefill work of the replica, until the first token (or failure).
        prefill = PendingPrefill(replica, choice.uncached_tokens,
                                 None if slot is None else slot.prefilled,
                                 partial(self._recorder.first_token, meter))
        if slot is not None:
            slot.dispatched()
        progress = meter.attempt(replica.url)
        model = call.model or self.model_name
        body = {**body, "model": model}
        try:
            with dispatch_span(model=model, pool=call.pool, replica=replica.url,
                               tenant=call.request.tenant_id, request_id=call.request_id,
                               attempt=attempt):
                upstream = await send(self._fleet.clients[replica.url], body,
                                      prefill.done, progress)
        except (ReplicaUnavailable, ReplicaServerError, ReplicaStreamError) as exc:
            replica.circuit.failure(time.monotonic())
            meter.attempt_failed(call.estimated)
            log.warning("replica_failed", replica=replica.url, error=str(exc))
            return None
        except errors.UpstreamError as exc:  # a stream broken after text was passed on
            replica.circuit.failure(time.monotonic())
            self._recorder.failed(call, exc, replica.url, meter)
            raise
        except ReplicaStatusError as exc:  # refused by the replica: nothing processed
            meter.attempt_failed(call.estimated)
            error = errors.UpstreamError(str(exc), upstream_status=exc.status_code)
            self._recorder.failed(call, error, replica.url, meter)
            raise error from exc
        finally:
            replica.in_flight_requests -= 1
            replica.in_flight_tokens -= call.needed
            prefill.release()
        replica.circuit.success()
        return upstream

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model_name, "messages": request.messages,
                                "max_tokens": request.max_tokens,
                                "temperature": request.temperature}
        if request.response_format is not None:
            body["response_format"] = request.response_format
        # The class is the router's to give (from the tenant), never the caller's.
        extra = {k: v for k, v in request.extra_body.items() if k != "priority"}
        if extra:
            body["extra_body"] = extra
        return body

    async def readiness(self) -> tuple[bool, str]:
        """(ready, why): ready while some replica of some pool can take a request — its
        circuit closed (not failing requests) and its /health answering 2xx now."""
        await self._fleet.discover()
        return await self._fleet.readiness(time.monotonic())

    def stream(self, request: ChatRequest) -> AsyncIterator[str | Completion]:
        """The text pieces as they are generated, then the Completion (with its usage)."""
        return stream_completion(self.complete, request)

    def relay(self, request: ChatRequest) -> AsyncIterator[bytes | Completion]:
        """The replica's server-sent events (OpenAI chat.completion.chunk, `[DONE]`) as the
        bytes that came, then the Completion (with its usage, without text): for an HTTP
        caller passing the stream on. Parsed only as far as metering needs
        (sse_relay.py); a refusal or a failure before the first text is raised as by
        `stream`. The chunks are the replica's: its id, its model name (the version
        served), its running usage in each."""
        return relay_completion(self.complete, request)

    async def close(self) -> None:
        if self._peers is not None:
            await self._peers.close()
        await self._recorder.close()
        await self._fleet.close()
        await self._picker.close()
        if isinstance(self._quota, RedisQuotaStore):
            await self._quota.close()
