"""Router: count → choose pool → reserve quota → admission → choose replica → dispatch
(retry elsewhere) → settle quota → record.

Metering (what the usage table and the quota are charged):

- A request dispatched to a replica gets one usage row, whatever happens after: reserved
  (`in_flight`, estimated prompt) before it is sent, settled in place when it ends —
  completed, failed at the replica, or cut by its caller (cancelled coroutine, stream
  closed, client disconnected: `client_disconnect`). The tokens are those the replica
  processed up to the end or the cut: its prompt and the output streamed so far (vLLM's
  running counts in each chunk); the quota is settled with the same, never refunded. A
  process killed mid-call leaves the row in flight, holding the prompt and the output
  streamed up to the last progress write (every second: router/progress.py); the next
  start of a usage writer settles it as `abandoned` with those (router/usage.py).
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
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from pipeline.config import DEFAULT_SCORER_WEIGHTS, LLMPool, TenantDefaults
from pipeline.router.admission import CLASSES, Admission, SlotHandle, effective_priority
from pipeline.router.discovery import Discovery, build_discovery
from pipeline.router.dispatch import (
    DeltaCallback,
    ReplicaClient,
    ReplicaServerError,
    ReplicaStatusError,
    ReplicaStreamError,
    ReplicaUnavailable,
    StreamProgress,
    Upstream,
)
from pipeline.router.errors import (
    NoHealthyReplica,
    QuotaExceeded,
    RequestOverQuota,
    RouterError,
    Saturated,
    UpstreamError,
)
from pipeline.router.membership import PoolMembership
from pipeline.router.progress import InFlightProgress
from pipeline.router.quota import (
    MemoryQuotaStore,
    QuotaStore,
    RedisQuotaStore,
    Reservation,
    resolve_limits,
)
from pipeline.router.quota.blocks import QuotaBlocks
from pipeline.router.replicas import Pool, Replica, choose_pool
from pipeline.router.scoring import ReplicaPicker, build_picker
from pipeline.router.streaming import stream_completion
from pipeline.router.tokens import Message, TokenCounter
from pipeline.router.tracing import dispatch_span
from pipeline.router.usage import ReservingUsageSink, UsageSink
from schemas.usage import CLIENT_CLOSED_STATUS, CLIENT_DISCONNECT, IN_FLIGHT, UsageEvent

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ChatRequest:
    tenant_id: str
    messages: list[Message]
    max_tokens: int
    temperature: float = 0.0
    priority: str = "standard"
    alert_id: str | None = None
    response_format: dict[str, Any] | None = None
    extra_body: dict[str, object] = field(default_factory=dict)
    # Seconds the caller will wait, from the call to complete(); bounds the admission
    # queue wait (None: the router's max_queue_wait_s).
    deadline_s: float | None = None


@dataclass(frozen=True)
class Completion:
    request_id: str
    text: str
    input_tokens: int
    output_tokens: int
    estimated_input_tokens: int
    ttft_ms: int | None
    latency_ms: int
    pool: str
    replica: str
    finish_reason: str | None


class _PendingPrefill:
    """A request's prompt tokens queued on a replica: released at its first token (then
    the admission hears of it) or when the attempt ends, whichever comes first."""

    def __init__(self, replica: Replica, tokens: int,
                 on_done: Callable[[], None] | None) -> None:
        self._replica = replica
        self._tokens = tokens
        self._on_done = on_done
        self._dispatched_at = time.monotonic()
        self._alone = replica.prefill.dispatched(tokens, self._dispatched_at)

    def release(self) -> None:
        """The attempt ended; if no first token came, its queued work is dropped."""
        if self._tokens:
            self._replica.prefill.abandoned(self._tokens, time.monotonic())
            self._tokens = 0

    def done(self) -> None:
        if self._tokens:
            self._replica.prefill.first_token(self._tokens, self._dispatched_at,
                                              time.monotonic(), self._alone)
            self._tokens = 0
        if self._on_done is not None:
            self._on_done()


@dataclass
class _Meter:
    """One request's row and the work replicas did for it so far: enough to settle it
    however it ends (completed, failed, cut by the caller)."""

    row_id: uuid.UUID = field(default_factory=uuid.uuid4)
    created_at: datetime | None = None  # set when the row is reserved
    replica: str = "-"
    progress: StreamProgress | None = None  # the attempt under way
    spent_input: int = 0  # earlier attempts that failed after doing some work
    spent_output: int = 0

    @property
    def sent(self) -> bool:
        return self.progress is not None or self.spent_input > 0

    def attempt(self, replica: str) -> StreamProgress:
        self.replica = replica
        self.progress = StreamProgress()
        return self.progress

    def attempt_failed(self, estimated: int) -> None:
        """A replica that failed after its first token had prefilled the prompt and
        generated what it streamed; one that failed before is taken to have done nothing
        (it is retried elsewhere)."""
        progress, self.progress = self.progress, None
        if progress is not None and progress.chunks:
            self.spent_input += (progress.prompt_tokens if progress.prompt_tokens is not None
                                 else estimated)
            self.spent_output += progress.output_tokens()

    def processed(self, estimated: int) -> tuple[int, int]:
        """(prompt, output) tokens processed so far; the current attempt's prompt counts
        from the moment it was sent (the replica may have prefilled it)."""
        prompt, output = self.spent_input, self.spent_output
        if self.progress is not None:
            prompt += (self.progress.prompt_tokens if self.progress.prompt_tokens is not None
                       else estimated)
            output += self.progress.output_tokens()
        return prompt, output


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
    def __init__(self, *, model_name: str, pools: Mapping[str, LLMPool], counter: TokenCounter,
                 usage: UsageSink, connect_timeout_s: float = 5.0,
                 request_timeout_s: float = 120.0, quota: QuotaStore | None = None,
                 admission: Admission | None = None,
                 tenants: TenantDefaults | None = None,
                 picker: ReplicaPicker | None = None,
                 discovery: Mapping[str, Discovery] | None = None,
                 progress_interval_s: float = 1.0) -> None:
        self.model_name = model_name
        self._quota: QuotaStore = quota if quota is not None else MemoryQuotaStore()
        self._admission = admission if admission is not None else Admission()
        self._tenants = tenants if tenants is not None else TenantDefaults()
        self._counter = counter
        self._usage = usage
        self._progress = InFlightProgress(usage, progress_interval_s)
        self._pools = [Pool(name, spec.max_context_tokens,
                            [Replica(url=url, pool=name) for url in spec.endpoints]
                            if spec.discovery == "static" else [],
                            priority_scheduling=spec.priority_scheduling)
                       for name, spec in pools.items()]
        self._timeouts = (connect_timeout_s, request_timeout_s)
        self._clients = {r.url: self._client_for(r.url) for p in self._pools for r in p.replicas}
        # Pools whose replicas come and go (membership.py): a configured non-static source,
        # or one given here (tests, tools). A static pool without one stays as configured.
        sources = dict(discovery or {})
        self._memberships: list[tuple[PoolMembership, float]] = []
        for pool in self._pools:
            spec = pools[pool.name]
            source = sources.get(pool.name)
            if source is None and spec.discovery != "static":
                source = build_discovery(spec.discovery, spec.endpoints)
            if source is not None:
                self._memberships.append((PoolMembership(
                    pool, source, probe=self._probe, on_joining=self._open_client,
                    on_forgotten=self._release_client), spec.refresh_s))
        self._discovery_started: asyncio.Task[None] | None = None
        self._refreshers: list[asyncio.Task[None]] = []
        # Filters + weighted scorers (pipeline/router/scoring); default: scrape /metrics.
        self._picker = picker if picker is not None else build_picker(
            DEFAULT_SCORER_WEIGHTS, list(self._clients))
        self._blocks = QuotaBlocks()
        # A tenant that cannot fit even the smallest request is refused without counting
        # (see quota/blocks.py).
        self._floor_tokens = smallest_request_tokens(counter)

    def _client_for(self, url: str) -> ReplicaClient:
        connect_timeout_s, request_timeout_s = self._timeouts
        return ReplicaClient(url, connect_timeout_s=connect_timeout_s,
                             request_timeout_s=request_timeout_s)

    def _open_client(self, url: str) -> None:
        if url not in self._clients:
            self._clients[url] = self._client_for(url)

    async def _probe(self, url: str) -> str | None:
        return await self._clients[url].probe()

    async def _release_client(self, url: str) -> None:
        """Close a forgotten replica's client unless another pool still holds that URL."""
        if any(url in {r.url for r in p.replicas} for p in self._pools) or any(
                url in m.urls() for m, _ in self._memberships):
            return
        client = self._clients.pop(url, None)
        if client is not None:
            await client.close()
        self._picker.track(list(self._clients))

    async def _discover(self) -> None:
        """First refresh of every dynamic pool (so a DNS pool has replicas before its
        first request), then one refresher task per pool. Idempotent; runs in the loop."""
        if not self._memberships:
            return
        if self._discovery_started is None:
            self._discovery_started = asyncio.ensure_future(self._first_refresh())
        await asyncio.shield(self._discovery_started)

    async def _first_refresh(self) -> None:
        for membership, _ in self._memberships:
            try:
                await membership.refresh()
            except Exception:
                log.exception("membership_refresh_failed", pool=membership.pool.name)
        self._picker.track(list(self._clients))
        self._refreshers = [asyncio.create_task(self._refresh_loop(m, interval),
                                                name=f"discovery-{m.pool.name}")
                            for m, interval in self._memberships]

    async def _refresh_loop(self, membership: PoolMembership, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await membership.refresh()
            except Exception:  # keep refreshing: the next round may succeed
                log.exception("membership_refresh_failed", pool=membership.pool.name)
            self._picker.track(list(self._clients))

    def count_text(self, text: str) -> int:
        """Tokens of a piece of prompt text (for packing context into a budget)."""
        return self._counter.count_text(text)

    def estimate(self, request: ChatRequest) -> tuple[int, int]:
        """(prompt tokens, prompt + max output tokens) before anything is sent."""
        prompt = self._counter.count_chat(request.messages)
        return prompt, prompt + request.max_tokens

    def shed(self, tenant_id: str,
             wait_budget_s: float | None = None) -> QuotaExceeded | Saturated | None:
        """Before counting tokens: the refusal a standard request of this tenant would get
        now, else None — QuotaExceeded while the tenant's quota fits no request at all
        (quota/blocks.py), Saturated when admission would refuse it in every pool (queue
        full, or the expected wait over `wait_budget_s`). Cheap: no tokenization, no quota
        call. A refusal is counted in the rejection metric (no usage row), like any other."""
        limits = resolve_limits(self._tenants, tenant_id)
        priority = effective_priority(limits.priority, "standard")
        refusal: QuotaExceeded | Saturated | None = self._blocked(tenant_id)
        if refusal is None:
            for pool in self._pools:
                refusal = self._admission.would_refuse(pool, priority, wait_budget_s)
                if refusal is None:
                    return None
        if refusal is not None:
            self._record_failure(ChatRequest(tenant_id=tenant_id, messages=[], max_tokens=0,
                                             priority=priority),
                                 uuid.uuid4().hex, 0, time.perf_counter(), refusal, "-", "-")
        return refusal

    def _blocked(self, tenant_id: str) -> QuotaExceeded | None:
        left = self._blocks.remaining(tenant_id, time.monotonic())
        return QuotaExceeded(tenant_id, left, left) if left > 0 else None

    async def complete(self, request: ChatRequest, *,
                       on_delta: DeltaCallback | None = None) -> Completion:
        """count → pool → reserve quota → admission slot → replica → dispatch → settle.

        `on_delta` receives the text as it is generated (see `stream`). Cancelling this
        coroutine after the request was sent settles its row and quota with what the
        replica processed up to then (see the module's docstring)."""
        await self._discover()
        request_id = uuid.uuid4().hex
        started = time.perf_counter()
        deadline = None if request.deadline_s is None else time.monotonic() + request.deadline_s
        limits = resolve_limits(self._tenants, request.tenant_id)
        request = replace(request, priority=effective_priority(limits.priority,
                                                               request.priority))
        blocked = self._blocked(request.tenant_id)
        if blocked is not None:  # no request of this tenant fits: do not even count
            self._record_failure(request, request_id, 0, started, blocked, "-", "-")
            raise blocked
        prompt_tokens, needed = self.estimate(request)
        try:
            pool = choose_pool(self._pools, needed)
        except RouterError as exc:
            self._record_failure(request, request_id, prompt_tokens, started, exc, "-", "-")
            raise
        try:
            window = min(limits.tokens_per_minute, limits.tokens_per_day)
            if needed > window:  # would wait forever: refuse as too large instead
                raise RequestOverQuota(request.tenant_id, needed, window)
            reservation = await self._quota.reserve(request.tenant_id, needed, limits,
                                                    floor_tokens=self._floor_tokens)
        except RouterError as exc:
            if isinstance(exc, QuotaExceeded) and exc.blocked_for > 0:
                self._blocks.block(request.tenant_id, time.monotonic() + exc.blocked_for)
            self._record_failure(request, request_id, prompt_tokens, started, exc,
                                 pool.name, "-")
            raise
        meter = _Meter()
        used_tokens = 0  # settled with what was processed; 0 releases it all
        try:
            async with self._admission.slot(pool, request.priority, request.tenant_id,
                                            deadline) as slot:
                completion = await self._dispatch(request, request_id, started, prompt_tokens,
                                                  needed, pool, on_delta, slot, meter)
            # The answer's own tokens, and those of attempts that broke after their first
            # token (charged, not in the answer's usage).
            used_tokens = (completion.input_tokens + completion.output_tokens
                           + meter.spent_input + meter.spent_output)
            return completion
        except Saturated as exc:  # refused by admission: the queue is full or too slow
            self._record_failure(request, request_id, prompt_tokens, started, exc,
                                 pool.name, "-")
            raise
        except RouterError:  # recorded by _dispatch with what the replicas processed
            used_tokens = sum(meter.processed(prompt_tokens))
            raise
        except asyncio.CancelledError:  # the caller went away: charge what was done
            used_tokens = self._record_cut(request, request_id, prompt_tokens, started,
                                           pool.name, meter)
            raise
        except Exception as exc:  # a bug or an unforeseen error: the row is still settled
            if meter.created_at is not None:
                used_tokens = sum(meter.processed(prompt_tokens))
                self._record_failure(request, request_id, prompt_tokens, started,
                                     UpstreamError(f"unexpected: {exc!r}"), pool.name,
                                     meter.replica, meter)
            raise
        finally:
            self._progress.untrack(meter.row_id)
            # Shielded: a second cancellation must not lose the settlement.
            await asyncio.shield(self._settle(reservation, used_tokens))

    async def _settle(self, reservation: Reservation, used_tokens: int) -> None:
        try:
            await self._quota.settle(reservation, used_tokens)
            if used_tokens < reservation.tokens:
                self._blocks.lift(reservation.tenant_id)  # the refund may fit a request
        except Exception:
            log.exception("quota_settle_failed", tenant_id=reservation.tenant_id)

    async def _dispatch(self, request: ChatRequest, request_id: str, started: float,
                        prompt_tokens: int, needed: int, pool: Pool,
                        on_delta: DeltaCallback | None,
                        slot: SlotHandle | None, meter: _Meter) -> Completion:
        """Choose a replica and send; on connect errors / 5xx retry on another one."""
        tried: set[str] = set()
        body = self._body(request)
        if pool.priority_scheduling:
            body["priority"] = CLASSES.index(request.priority)
        while True:
            try:
                choice = self._picker.choose(pool, needed_tokens=needed,
                                             prompt_tokens=prompt_tokens,
                                             messages=request.messages, exclude=tried)
            except NoHealthyReplica as exc:
                self._record_unserved(request, request_id, prompt_tokens, started, exc,
                                      pool.name, meter)
                raise
            replica = choice.replica
            if meter.created_at is None:  # the row exists before anything is sent
                await self._reserve(request, request_id, prompt_tokens, pool.name,
                                    replica.url, meter)
            tried.add(replica.url)
            replica.in_flight_requests += 1
            replica.in_flight_tokens += needed
            # Queued prefill work of the replica, until the first token (or failure).
            prefill = _PendingPrefill(replica, choice.uncached_tokens,
                                      None if slot is None else slot.prefilled)
            if slot is not None:
                slot.dispatched()
            progress = meter.attempt(replica.url)
            try:
                with dispatch_span(model=self.model_name, pool=pool.name,
                                   replica=replica.url, tenant=request.tenant_id,
                                   request_id=request_id, attempt=len(tried)):
                    upstream = await self._clients[replica.url].chat(body, on_delta,
                                                                     prefill.done, progress)
            except (ReplicaUnavailable, ReplicaServerError, ReplicaStreamError) as exc:
                replica.circuit.failure(time.monotonic())
                meter.attempt_failed(prompt_tokens)
                log.warning("replica_failed", replica=replica.url, error=str(exc))
                continue
            except UpstreamError as exc:  # a stream broken after text was passed on
                replica.circuit.failure(time.monotonic())
                self._record_failure(request, request_id, prompt_tokens, started, exc,
                                     pool.name, replica.url, meter)
                raise
            except ReplicaStatusError as exc:  # refused by the replica: nothing processed
                meter.attempt_failed(prompt_tokens)
                error = UpstreamError(str(exc), upstream_status=exc.status_code)
                self._record_failure(request, request_id, prompt_tokens, started, error,
                                     pool.name, replica.url, meter)
                raise error from exc
            finally:
                replica.in_flight_requests -= 1
                replica.in_flight_tokens -= needed
                prefill.release()
            replica.circuit.success()
            return self._finish(request, request_id, prompt_tokens, pool, replica, upstream,
                                meter)

    async def _reserve(self, request: ChatRequest, request_id: str, estimated: int,
                       pool: str, replica: str, meter: _Meter) -> None:
        meter.created_at = datetime.now(UTC)
        meter.replica = replica
        if isinstance(self._usage, ReservingUsageSink):
            await self._usage.reserve(self._event(
                request, request_id, pool, meter, input_tokens=estimated, output_tokens=0,
                status_code=None, error_kind=IN_FLIGHT))
        self._progress.track(meter.row_id, lambda: self._in_flight(
            request, request_id, pool, meter, estimated))

    def _in_flight(self, request: ChatRequest, request_id: str, pool: str, meter: _Meter,
                   estimated: int) -> UsageEvent:
        """The row of a request under way, with what the replicas processed so far."""
        input_tokens, output_tokens = (meter.processed(estimated) if meter.sent
                                       else (estimated, 0))
        return self._event(request, request_id, pool, meter, input_tokens=input_tokens,
                           output_tokens=output_tokens, status_code=None,
                           error_kind=IN_FLIGHT)

    def _event(self, request: ChatRequest, request_id: str, pool: str, meter: _Meter | None,
               **values: Any) -> UsageEvent:
        """An event of this request; with a meter, for its reserved row."""
        if meter is not None:
            values.setdefault("replica", meter.replica)
            values["id"] = meter.row_id
            if meter.created_at is not None:
                values["created_at"] = meter.created_at
        return UsageEvent(tenant_id=request.tenant_id, model_name=self.model_name, pool=pool,
                          priority=request.priority, request_id=request_id,
                          alert_id=request.alert_id, **values)

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

    def _finish(self, request: ChatRequest, request_id: str, estimated: int, pool: Pool,
                replica: Replica, upstream: Upstream, meter: _Meter) -> Completion:
        input_tokens = upstream.prompt_tokens if upstream.prompt_tokens is not None else estimated
        output_tokens = upstream.completion_tokens or 0
        if upstream.prompt_tokens is not None and upstream.prompt_tokens != estimated:
            log.warning("token_estimate_mismatch", estimated=estimated,
                        reported=upstream.prompt_tokens)
        # Earlier attempts that broke after their first token are charged too.
        self._usage.record(self._event(
            request, request_id, pool.name, meter, replica=replica.url,
            input_tokens=input_tokens + meter.spent_input,
            output_tokens=output_tokens + meter.spent_output,
            ttft_ms=upstream.ttft_ms, total_latency_ms=upstream.latency_ms, status_code=200))
        return Completion(request_id=request_id, text=upstream.text,
                          input_tokens=input_tokens, output_tokens=output_tokens,
                          estimated_input_tokens=estimated,
                          ttft_ms=upstream.ttft_ms, latency_ms=upstream.latency_ms,
                          pool=pool.name, replica=replica.url,
                          finish_reason=upstream.finish_reason)

    def _record_failure(self, request: ChatRequest, request_id: str, estimated: int,
                        started: float, error: RouterError, pool: str, replica: str,
                        meter: _Meter | None = None) -> None:
        """Without a meter: a refusal before any replica (metrics only, no row). With one:
        the request's row, settled with what the replicas processed."""
        input_tokens, output_tokens = (estimated, 0) if meter is None \
            else meter.processed(estimated)
        self._usage.record(self._event(
            request, request_id, pool, meter, replica=replica, input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_latency_ms=round((time.perf_counter() - started) * 1000),
            status_code=error.status_code, error_kind=error.kind,
            dispatched=meter is not None))

    def _record_unserved(self, request: ChatRequest, request_id: str, estimated: int,
                         started: float, error: NoHealthyReplica, pool: str,
                         meter: _Meter) -> None:
        """No replica (left) to try. If none did any work, it is a refusal: the row
        reserved for it, if any, is deleted; else the work done is charged."""
        if meter.spent_input or meter.spent_output:
            self._record_failure(request, request_id, estimated, started, error, pool,
                                 meter.replica, meter)
            return
        self._usage.record(self._event(
            request, request_id, pool, meter, input_tokens=estimated, output_tokens=0,
            total_latency_ms=round((time.perf_counter() - started) * 1000),
            status_code=error.status_code, error_kind=error.kind, dispatched=False))

    def _record_cut(self, request: ChatRequest, request_id: str, estimated: int,
                    started: float, pool: str, meter: _Meter) -> int:
        """The caller cancelled: the tokens processed up to the cut, charged."""
        if meter.created_at is None:
            return 0  # still in the admission queue: nothing was sent
        input_tokens, output_tokens = meter.processed(estimated)
        if not meter.sent:  # cancelled while its row was being reserved
            self._usage.record(self._event(
                request, request_id, pool, meter, input_tokens=0, output_tokens=0,
                status_code=CLIENT_CLOSED_STATUS, error_kind=CLIENT_DISCONNECT,
                dispatched=False))
            return 0
        self._usage.record(self._event(
            request, request_id, pool, meter, input_tokens=input_tokens,
            output_tokens=output_tokens,
            total_latency_ms=round((time.perf_counter() - started) * 1000),
            status_code=CLIENT_CLOSED_STATUS, error_kind=CLIENT_DISCONNECT))
        log.info("request_cut_by_caller", request_id=request_id, tenant_id=request.tenant_id,
                 input_tokens=input_tokens, output_tokens=output_tokens)
        return input_tokens + output_tokens

    async def readiness(self) -> tuple[bool, str]:
        """(ready, why): ready while some replica of some pool can take a request — its
        circuit closed (not failing requests) and its /health answering 2xx now."""
        await self._discover()
        now = time.monotonic()
        replicas = [r for pool in self._pools for r in pool.replicas]
        open_circuits = {r.url for r in replicas if not r.circuit.allows(now)}
        probed = [r for r in replicas if r.url not in open_circuits]
        answers = await asyncio.gather(*(self._clients[r.url].probe() for r in probed))
        problems = {r.url: f"circuit open after {r.circuit.failures} failures"
                    for r in replicas if r.url in open_circuits}
        for replica, problem in zip(probed, answers, strict=True):
            if problem is None:
                return True, f"replica {replica.url} of pool {replica.pool!r} is healthy"
            problems[replica.url] = problem
        return False, "no healthy replica: " + "; ".join(
            f"{url}: {why}" for url, why in problems.items())

    def stream(self, request: ChatRequest) -> AsyncIterator[str | Completion]:
        """The text pieces as they are generated, then the Completion (with its usage)."""
        return stream_completion(self.complete, request)

    async def close(self) -> None:
        await self._progress.close()
        for task in self._refreshers:
            task.cancel()
        for task in self._refreshers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._refreshers = []
        for client in self._clients.values():
            await client.close()
        await self._picker.close()
        if isinstance(self._quota, RedisQuotaStore):
            await self._quota.close()
