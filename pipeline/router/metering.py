"""One request's usage row and the work replicas did for it (the rules: router.py's
docstring). `Call` is the request on its way, `Meter` what replicas processed so far,
`UsageRecorder` turns either into the usage events the sink gets."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from pipeline.router.dispatch import StreamProgress, Upstream
from pipeline.router.errors import NoHealthyReplica, RouterError
from pipeline.router.ids import new_request_id, new_row_id
from pipeline.router.progress import InFlightProgress
from pipeline.router.replicas import Replica
from pipeline.router.types import ChatRequest, Completion
from pipeline.router.usage import ReservingUsageSink, UsageSink
from schemas.usage import CLIENT_CLOSED_STATUS, CLIENT_DISCONNECT, IN_FLIGHT, UsageEvent

log = structlog.get_logger(__name__)


@dataclass(slots=True)  # no __dict__: one object less per request to allocate and collect
class Call:
    """A request on its way through the router: what every event of it carries."""

    request: ChatRequest
    request_id: str = field(default_factory=new_request_id)
    started: float = field(default_factory=time.perf_counter)
    estimated: int = 0  # prompt tokens counted before dispatch (0: not counted yet)
    needed: int = 0  # estimated + max output tokens: what the quota and context must fit
    pool: str = "-"  # the pool chosen, once it is
    model: str | None = None  # the model version sent to (None: the router's model_name)

    def elapsed_ms(self) -> int:
        return round((time.perf_counter() - self.started) * 1000)


class PendingPrefill:
    """A request's prompt tokens queued on a replica: released at its first token (then
    the admission hears of it) or when the attempt ends, whichever comes first."""

    def __init__(self, replica: Replica, tokens: int,
                 on_done: Callable[[], None] | None,
                 on_first_token: Callable[[], None] | None = None) -> None:
        self._replica = replica
        self._tokens = tokens
        self._on_done = on_done
        self._on_first_token = on_first_token  # the usage row's progress hears of it
        self._dispatched_at = time.monotonic()
        self._first_token_at: float | None = None
        self._alone = replica.prefill.dispatched(tokens, self._dispatched_at)

    def release(self) -> None:
        """The attempt ended; if no first token came, its queued work is dropped."""
        now = time.monotonic()
        if self._tokens:
            self._replica.prefill.abandoned(self._tokens, now)
            self._tokens = 0
        if self._first_token_at is not None:  # how long it held a decode slot
            self._replica.slots.finished(self._first_token_at, now)
            self._first_token_at = None

    def done(self) -> None:
        self._first_token_at = now = time.monotonic()
        if self._tokens:
            self._replica.prefill.first_token(self._tokens, self._dispatched_at,
                                              now, self._alone)
            self._tokens = 0
        if self._on_done is not None:
            self._on_done()
        if self._on_first_token is not None:
            self._on_first_token()


@dataclass(slots=True)
class Meter:
    """One request's row and the work replicas did for it so far: enough to settle it
    however it ends (completed, failed, cut by the caller)."""

    row_id: uuid.UUID = field(default_factory=new_row_id)  # time-ordered (ids.py)
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


class _InFlightRow:
    """A request under way, as the progress rounds see its row (progress.py `Row`)."""

    __slots__ = ("_call", "_meter", "_recorder", "sent")

    def __init__(self, recorder: UsageRecorder, call: Call, meter: Meter) -> None:
        self._recorder = recorder
        self._call = call
        self._meter = meter
        self.sent: tuple[int, int] | None = (call.estimated, 0)  # as reserved

    def counts(self) -> tuple[int, int]:
        meter, estimated = self._meter, self._call.estimated
        return meter.processed(estimated) if meter.sent else (estimated, 0)

    def snapshot(self) -> UsageEvent:
        """The row with what the replicas processed so far."""
        input_tokens, output_tokens = self.counts()
        return self._recorder.event(self._call, self._meter, input_tokens=input_tokens,
                                    output_tokens=output_tokens, status_code=None,
                                    error_kind=IN_FLIGHT)


class UsageRecorder:
    """The usage events of a router's requests, to its sink; the running counts of those
    in flight passed on every `progress_interval_s` (progress.py)."""

    def __init__(self, model_name: str, usage: UsageSink,
                 progress_interval_s: float = 1.0) -> None:
        self.model_name = model_name
        self._usage = usage
        # Checked once: isinstance against a runtime Protocol walks its members (it was a
        # sixth of the CPU metering a request cost: bench/usage_events.py).
        self._reserving = usage if isinstance(usage, ReservingUsageSink) else None
        self._progress = InFlightProgress(usage, progress_interval_s)

    def event(self, call: Call, meter: Meter | None, **values: Any) -> UsageEvent:
        """An event of this request; with a meter, for its reserved row."""
        if meter is not None:
            values.setdefault("replica", meter.replica)
            values["id"] = meter.row_id
            if meter.created_at is not None:
                values["created_at"] = meter.created_at
        request = call.request
        return UsageEvent(tenant_id=request.tenant_id, model_name=call.model or self.model_name,
                          pool=call.pool, priority=request.priority,
                          request_id=call.request_id, alert_id=request.alert_id, **values)

    def _row_event(self, call: Call, meter: Meter, replica: str, input_tokens: int,
                   output_tokens: int, status_code: int | None,
                   error_kind: str | None) -> UsageEvent:
        """`event` for a reserved row, spelled out: the two events every request makes
        (its reservation, its completion) without `event`'s merging of keywords (a
        tenth of the CPU of metering a request: bench/usage_events.py)."""
        request = call.request
        return UsageEvent(
            id=meter.row_id, created_at=meter.created_at or datetime.now(UTC),
            tenant_id=request.tenant_id, model_name=call.model or self.model_name,
            pool=call.pool, replica=replica, priority=request.priority,
            request_id=call.request_id, alert_id=request.alert_id,
            input_tokens=input_tokens, output_tokens=output_tokens,
            status_code=status_code, error_kind=error_kind)

    async def reserve(self, call: Call, replica: str, meter: Meter) -> None:
        """The request's row, in flight with its estimated prompt, before it is sent."""
        meter.created_at = datetime.now(UTC)
        meter.replica = replica
        if self._reserving is not None:
            await self._reserving.reserve(self._row_event(
                call, meter, replica, call.estimated, 0, None, IN_FLIGHT))
        self._progress.track_row(meter.row_id, _InFlightRow(self, call, meter))

    def first_token(self, meter: Meter) -> None:
        """The request's first output token came: its row shows it within a poll."""
        self._progress.first_token(meter.row_id)

    def settled(self, meter: Meter) -> None:
        """The request ended (its final event recorded): no more progress of its row."""
        self._progress.untrack(meter.row_id)

    async def close(self) -> None:
        await self._progress.close()

    def finished(self, call: Call, replica: Replica, upstream: Upstream,
                 meter: Meter) -> Completion:
        estimated = call.estimated
        input_tokens = upstream.prompt_tokens if upstream.prompt_tokens is not None else estimated
        output_tokens = upstream.completion_tokens or 0
        if upstream.prompt_tokens is not None and upstream.prompt_tokens != estimated:
            log.warning("token_estimate_mismatch", estimated=estimated,
                        reported=upstream.prompt_tokens)
        # Earlier attempts that broke after their first token are charged too.
        event = self._row_event(call, meter, replica.url, input_tokens + meter.spent_input,
                                output_tokens + meter.spent_output, 200, None)
        event.ttft_ms, event.total_latency_ms = upstream.ttft_ms, upstream.latency_ms
        self._usage.record(event)
        return Completion(request_id=call.request_id, text=upstream.text,
                          input_tokens=input_tokens, output_tokens=output_tokens,
                          estimated_input_tokens=estimated,
                          ttft_ms=upstream.ttft_ms, latency_ms=upstream.latency_ms,
                          pool=call.pool, replica=replica.url,
                          finish_reason=upstream.finish_reason)

    def failed(self, call: Call, error: RouterError, replica: str = "-",
               meter: Meter | None = None) -> None:
        """Without a meter: a refusal before any replica (metrics only, no row). With one:
        the request's row, settled with what the replicas processed."""
        input_tokens, output_tokens = (call.estimated, 0) if meter is None \
            else meter.processed(call.estimated)
        self._usage.record(self.event(
            call, meter, replica=replica, input_tokens=input_tokens,
            output_tokens=output_tokens, total_latency_ms=call.elapsed_ms(),
            status_code=error.status_code, error_kind=error.kind,
            dispatched=meter is not None))

    def unserved(self, call: Call, error: NoHealthyReplica, meter: Meter) -> None:
        """No replica (left) to try. If none did any work, it is a refusal: the row
        reserved for it, if any, is deleted; else the work done is charged."""
        if meter.spent_input or meter.spent_output:
            self.failed(call, error, meter.replica, meter)
            return
        self._usage.record(self.event(
            call, meter, input_tokens=call.estimated, output_tokens=0,
            total_latency_ms=call.elapsed_ms(),
            status_code=error.status_code, error_kind=error.kind, dispatched=False))

    def cut(self, call: Call, meter: Meter) -> int:
        """The caller cancelled: the tokens processed up to the cut, charged."""
        if meter.created_at is None:
            return 0  # still in the admission queue: nothing was sent
        input_tokens, output_tokens = meter.processed(call.estimated)
        if not meter.sent:  # cancelled while its row was being reserved
            self._usage.record(self.event(
                call, meter, input_tokens=0, output_tokens=0,
                status_code=CLIENT_CLOSED_STATUS, error_kind=CLIENT_DISCONNECT,
                dispatched=False))
            return 0
        self._usage.record(self.event(
            call, meter, input_tokens=input_tokens, output_tokens=output_tokens,
            total_latency_ms=call.elapsed_ms(),
            status_code=CLIENT_CLOSED_STATUS, error_kind=CLIENT_DISCONNECT))
        log.info("request_cut_by_caller", request_id=call.request_id,
                 tenant_id=call.request.tenant_id,
                 input_tokens=input_tokens, output_tokens=output_tokens)
        return input_tokens + output_tokens
