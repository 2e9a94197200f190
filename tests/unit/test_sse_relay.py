"""SseRelay (pipeline/router/sse_relay.py): a replica's events passed on byte for byte,
however the socket cut them into pieces, read only for what metering needs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.router.sse_relay import SseRelay, StreamError, StreamProgress


def event(payload: object) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


def chunk(content: str | None = None, *, role: bool = False, finish: str | None = None,
          usage: tuple[int, int] | None = None) -> bytes:
    delta: dict[str, str] = {"role": "assistant"} if role else {}
    if content is not None:
        delta["content"] = content
    body: dict[str, object] = {"id": "x", "object": "chat.completion.chunk",
                               "choices": [{"index": 0, "delta": delta,
                                            "finish_reason": finish}]}
    if usage is not None:
        body["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1]}
    return event(body)


# As vLLM streams with continuous_usage_stats: role first, text, finish, usage, [DONE].
# The text holds what a scanner must not take for structure.
TEXTS = ['Hel', 'lo "error": {', ' "finish_reason": "x"', ' [DONE] "usage": {}', '\\n']
STREAM = (chunk("", role=True, usage=(7, 0))
          + b"".join(chunk(t, usage=(7, n + 1)) for n, t in enumerate(TEXTS))
          + chunk(finish="length", usage=(7, 5))
          + event({"id": "x", "choices": [], "usage": {"prompt_tokens": 7,
                                                        "completion_tokens": 5}})
          + b"data: [DONE]\n\n")


def relay_all(pieces: list[bytes]) -> tuple[SseRelay, list[bytes]]:
    relay = SseRelay(StreamProgress())
    out = [relay.feed(p) for p in pieces]
    out.append(relay.flush())
    return relay, out


def text_of(stream: bytes) -> str:
    text = ""
    for block in stream.split(b"\n\n"):
        if block.startswith(b"data: {"):
            for choice in json.loads(block[6:])["choices"]:
                text += choice["delta"].get("content") or ""
    return text


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=12))
def test_passes_the_bytes_on_unchanged_and_reads_the_counts(cuts: list[int]) -> None:
    relay, out = relay_all(split(STREAM, cuts))
    assert b"".join(out) == STREAM
    assert text_of(b"".join(out)) == "".join(TEXTS)
    progress = relay.progress
    assert (progress.prompt_tokens, progress.completion_tokens) == (7, 5)
    assert progress.output_tokens() == 5
    assert relay.finish_reason == "length" and relay.done and relay.first_token_at


def test_holds_everything_before_the_first_text() -> None:
    relay = SseRelay(StreamProgress())
    assert relay.feed(chunk("", role=True)) == b""
    assert relay.feed(b'data: {"choices": [{"delta": {"cont') == b""
    assert not relay.passed_on and relay.first_token_at is None
    out = relay.feed(b'ent": "hi"}}]}\n\n')
    assert out == chunk("", role=True) + b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n'
    assert relay.passed_on and relay.first_token_at is not None


def test_an_error_before_the_first_text_raises_with_nothing_passed_on() -> None:
    relay = SseRelay(StreamProgress())
    assert relay.feed(chunk("", role=True)) == b""
    with pytest.raises(StreamError, match="engine died"):
        relay.feed(event({"error": {"message": "engine died"}}))
    with pytest.raises(StreamError, match="malformed"):
        SseRelay(StreamProgress()).feed(b"data: {nope\n\n")
    assert not relay.passed_on


def test_an_error_after_text_cuts_the_piece_before_it() -> None:
    relay = SseRelay(StreamProgress())
    relay.feed(chunk("a"))
    out = relay.feed(chunk("b") + event({"error": {"message": "engine died"}}) + chunk("c"))
    assert out == chunk("b")
    assert relay.error is not None and "engine died" in relay.error
    assert relay.progress.chunks == 2


def test_nothing_after_done_and_a_stream_without_text_is_flushed_at_its_end() -> None:
    relay, out = relay_all([chunk("a") + b"data: [DONE]\n\n" + chunk("late"), chunk("more")])
    assert b"".join(out) == chunk("a") + b"data: [DONE]\n\n"
    empty = chunk("", role=True) + chunk(finish="stop", usage=(3, 0))
    relay, out = relay_all([empty])
    assert b"".join(out) == empty and relay.first_token_at is None
    assert relay.finish_reason == "stop" and relay.progress.prompt_tokens == 3


def test_usage_is_parsed_when_read_and_crlf_framing_is_understood() -> None:
    relay = SseRelay(StreamProgress())
    relay.feed(chunk("a", usage=(4, 1)))
    relay.feed(chunk("b", usage=(4, 2)).replace(b"\n", b"\r\n"))
    assert relay.progress._raw_usage is not None  # kept raw until read
    assert relay.progress.completion_tokens == 2 and relay.progress._raw_usage is None
    assert relay.progress.output_tokens() == 2


def test_a_stream_without_running_usage_is_counted_by_its_text_chunks() -> None:
    relay, _ = relay_all([chunk("a") + chunk("b"), chunk(""), chunk("c", finish="stop")])
    assert relay.progress.completion_tokens is None
    assert relay.progress.output_tokens() == 3 and relay.finish_reason == "stop"
