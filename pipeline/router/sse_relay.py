"""A replica's server-sent events passed on as the bytes that came, read only as far as
metering needs.

Parsing every chunk's JSON (and re-encoding it for the caller) was most of the router's
CPU per streamed token (docs/benchmarks.md, "Router overhead at the socket boundary").
Relayed, a piece of the stream is looked at with byte searches (C speed) for the few
things the router needs, and JSON is parsed only where one of them is:

- before the first generated text every event is parsed and held back: until then a
  failure can still be retried on another replica, unseen by the caller; the first text
  is the time to first token;
- after it, per piece: whether an `error` key, a `finish_reason` string or `[DONE]` is in
  it, and the count of text chunks (`"content": "x…"`) if it has no running usage.
  Inside a JSON string a quote is escaped (`\\"`), so these byte patterns cannot come
  from generated text;
- the running `usage` (vLLM's continuous_usage_stats) is kept as the raw bytes of the
  latest event that has one, parsed only when somebody reads the counts
  (`StreamProgress`: progress writes about once a second, a cut, the end).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

_TEXT = re.compile(rb'"content"\s*:\s*"[^"]')  # a chunk carrying generated text
_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_FINISH = re.compile(rb'"finish_reason"\s*:\s*"([^"\\]*)"')
_FINISH_COMPACT, _FINISH_SPACED = b'"finish_reason":"', b'"finish_reason": "'
_ERROR = b'"error"'
_DONE = b"[DONE]"
_END = b"\n\n"  # end of an event (after `\r\n` → `\n`)


class StreamError(Exception):
    """An event carrying an `error`, or one that is not JSON."""


class StreamProgress:
    """What a replica has processed of one request so far, as the stream shows it: read
    when the request is cut (cancelled, killed stream) to meter the work done. With
    `continuous_usage_stats` vLLM puts its own running counts in every chunk; `chunks`
    (pieces of text received) is the fallback for a server that does not. A relayed
    stream leaves its latest usage unparsed (`usage_event`) until the counts are read."""

    __slots__ = ("_completion", "_prompt", "_raw_usage", "chunks")

    def __init__(self) -> None:
        self.chunks = 0
        self._prompt: int | None = None
        self._completion: int | None = None
        self._raw_usage: bytes | None = None

    @property
    def prompt_tokens(self) -> int | None:
        self._parse_usage()
        return self._prompt

    @property
    def completion_tokens(self) -> int | None:
        self._parse_usage()
        return self._completion

    def usage(self, usage: dict[str, Any]) -> None:
        """The usage object of a parsed chunk."""
        self._raw_usage = None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        self._prompt = prompt if isinstance(prompt, int) else self._prompt
        self._completion = completion if isinstance(completion, int) else self._completion

    def usage_event(self, block: bytes) -> None:
        """The latest event (`data:` lines) that carries a usage object, parsed when
        read."""
        self._raw_usage = block

    def output_tokens(self) -> int:
        return max(self.completion_tokens or 0, self.chunks)

    def _parse_usage(self) -> None:
        raw, self._raw_usage = self._raw_usage, None
        if raw is None:
            return
        try:
            event = json.loads(event_data(raw))
        except ValueError:
            return  # checked when the event went through; keep the last good counts
        if isinstance(event, dict) and isinstance(event.get("usage"), dict):
            self.usage(event["usage"])


def event_data(block: bytes) -> bytes:
    """The data of one event (its `data:` lines joined by a newline, as SSE says)."""
    lines = [line[6:] if line[5:6] == b" " else line[5:]
             for line in block.split(b"\n") if line.startswith(b"data:")]
    return lines[0] if len(lines) == 1 else b"\n".join(lines)


def parse_event(data: bytes) -> dict[str, Any] | None:
    """A chunk's JSON; None for a non-object. Raises StreamError for an error event or
    broken JSON (a broken server, not a reason to escape as ValueError)."""
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise StreamError(f"malformed event in stream: {exc}") from exc
    if not isinstance(event, dict):
        return None
    if event.get("error") is not None:
        raise StreamError(f"error in stream: {event['error']}")
    return event


class SseRelay:
    """Scans one relayed stream. `feed` takes each piece as it came off the socket and
    returns the bytes to pass on now: nothing while holding back (before the first
    text), then the piece itself — cut before an error event (then `error` is set) or
    after `[DONE]` (then `done`)."""

    def __init__(self, progress: StreamProgress) -> None:
        self.progress = progress
        self.first_token_at: float | None = None
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.done = False
        self._held: list[bytes] | None = []  # None once the first text was seen
        self._tail = b""  # an event not complete yet (already passed on, if not held)

    @property
    def passed_on(self) -> bool:
        return self._held is None

    def feed(self, piece: bytes) -> bytes:
        if self.done:  # nothing after `[DONE]` is passed on
            return b""
        if b"\r" in piece:  # framing only: JSON escapes a carriage return
            piece = piece.replace(b"\r\n", b"\n")
        buf = self._tail + piece if self._tail else piece
        end = buf.rfind(_END)
        if end < 0:
            self._tail = buf
            if self._held is not None:
                self._held.append(piece)
                return b""
            return piece
        old_tail, whole, self._tail = len(self._tail), buf[:end], buf[end + 2:]
        if self._held is not None:
            return self._first(piece, whole, old_tail)
        cut = self._scan(whole)
        return piece if cut is None else piece[:max(0, cut - old_tail)]

    def flush(self) -> bytes:
        """The end of the stream: what is still held (a stream without text)."""
        return self._release(b"") if self._held is not None else b""

    def _first(self, piece: bytes, whole: bytes, old_tail: int) -> bytes:
        """Before the first text: each complete event parsed, the piece held until text
        comes; then the held pieces pass on with this one."""
        start = 0
        while start < len(whole):
            stop = whole.find(_END, start)
            stop = len(whole) if stop < 0 else stop
            if self.first_token_at is None:
                self._parsed(whole[start:stop])  # raises StreamError: nothing passed on
                if self.done:  # a stream without text: passed on up to [DONE]
                    return self._release(piece[:max(0, stop + 2 - old_tail)])
            else:
                cut = self._scan(whole[start:stop])
                if cut is not None:
                    return self._release(piece[:max(0, start + cut - old_tail)])
            start = stop + 2
        if self.first_token_at is None:
            assert self._held is not None
            self._held.append(piece)
            return b""
        return self._release(piece)

    def _release(self, last: bytes) -> bytes:
        held, self._held = self._held or [], None
        return b"".join([*held, last]) if held else last

    def _parsed(self, block: bytes) -> None:
        data = event_data(block)
        if not data:
            return
        if data.startswith(_DONE):
            self.done = True
            return
        event = parse_event(data)
        if event is None:
            return
        if isinstance(event.get("usage"), dict):
            self.progress.usage(event["usage"])
        for choice in event.get("choices") or ():
            if (choice.get("delta") or {}).get("content"):
                if self.first_token_at is None:
                    self.first_token_at = time.perf_counter()
                self.progress.chunks += 1
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def _scan(self, whole: bytes) -> int | None:
        """Complete events after the first text, by byte search; where to cut the piece
        (an offset into the scanned bytes), else None."""
        cut = None
        if _ERROR in whole or _DONE in whole:
            cut = self._scan_slowly(whole)
            whole = whole if cut is None else whole[:cut]
        if not self._latest_usage(whole):  # a server without running usage: count text
            self.progress.chunks += len(_TEXT.findall(whole))
        # A finish reason is a string in one chunk only; `null` in the others. (A server
        # spacing it otherwise leaves it None: the answer then says "stop".)
        if _FINISH_COMPACT in whole or _FINISH_SPACED in whole:
            self.finish_reason = _FINISH.findall(whole)[-1].decode(errors="replace")
        return cut

    def _scan_slowly(self, whole: bytes) -> int | None:
        """Event by event: the offset of an error event (sets `error`) or of the end of
        `[DONE]` (sets `done`)."""
        start = 0
        while start < len(whole):
            stop = whole.find(_END, start)
            stop = len(whole) if stop < 0 else stop
            data = event_data(whole[start:stop])
            if data.startswith(_DONE):
                self.done = True
                return stop + 2  # with its blank line
            if _ERROR in data:
                try:
                    parse_event(data)
                except StreamError as exc:
                    self.error = str(exc)
                    return start
            start = stop + 2
        return None

    def _latest_usage(self, whole: bytes) -> bool:
        """The last event with a usage object kept raw (parsed when read); whether any."""
        at = len(whole)
        while (at := whole.rfind(b'"usage"', 0, at)) >= 0:
            if _USAGE.match(whole, at):
                start = whole.rfind(_END, 0, at)
                stop = whole.find(_END, at)
                self.progress.usage_event(
                    whole[start + 2 if start >= 0 else 0:stop if stop >= 0 else len(whole)])
                return True
        return False
