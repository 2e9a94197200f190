"""Property-based fuzzing of alerts (hypothesis; strategies in fuzz_alerts.py):

(a) through `pipeline.analysis.normalize.normalize`: no exception but NormalizationError with a
    reason, and a normalized alert serializes to JSON that round-trips and that
    PostgreSQL's jsonb accepts (no NUL, no lone surrogate, finite numbers);
(b) through POST /ingest/wazuh (the real app, a recording sink): only 2xx or 4xx, a 4xx
    names the problem, a 2xx hands on only alerts within the limits.

Crashes are collected rather than raised at the first one, so the run counts every
outcome (docs/reliability.md) and the failure lists the smallest inputs that crashed.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from pipeline.analysis.normalize import NormalizationError, normalize
from pipeline.config import IngestSettings, Settings
from pipeline.kafka.alert_guard import check_size
from pipeline.web.ingest import IngestResources, create_ingest_app
from tests.reliability.conftest import full_size
from tests.reliability.fuzz_alerts import alert_bytes
from tests.reliability.report import report_figure, report_row
from tests.unit.test_ingest_endpoint import KEY, FakeAuth

pytestmark = pytest.mark.timeout(full_size(900, 4 * 3600))
RUN = 10_000
FUZZ = settings(deadline=None, database=None, derandomize=False, print_blob=True,
                suppress_health_check=list(HealthCheck))


def _kind(reason: str) -> str:
    """A short label for a refusal reason: its words before the first detail."""
    head = re.split(r"[:(]| at line", reason, maxsplit=1)[0].strip()
    head = re.sub(r"'[^']*'", "'…'", head)  # field 'rule.level' → field '…'
    head = re.sub(r"(?<![\w.-])[-+]?\d[\w,.+-]*", "N", head)  # sizes, numbers (not UTF-8)
    return head[:48] or "?"


def _jsonb_problem(value: Any, where: str = "$") -> str | None:
    """Why PostgreSQL's jsonb would refuse `value` (None: it would store it)."""
    if isinstance(value, str):
        if "\x00" in value:
            return f"NUL in {where}"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"lone surrogate in {where}"
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"non-finite number in {where}"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _jsonb_problem(key, f"{where} key") or _jsonb_problem(
                item, f"{where}.{key}")
            if problem:
                return problem
    if isinstance(value, list):
        for index, item in enumerate(value):
            problem = _jsonb_problem(item, f"{where}[{index}]")
            if problem:
                return problem
    return None


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    crashes: list[tuple[int, str, bytes]] = field(default_factory=list)

    @property
    def cases(self) -> int:
        return sum(self.outcomes.values())

    def crash(self, data: bytes, problem: str) -> None:
        self.outcomes["crash"] += 1
        self.crashes.append((len(data), problem, data[:300]))

    def summary(self) -> str:
        smallest = sorted(self.crashes)[:5]
        return "\n".join(f"{problem} ← {data!r}" for _, problem, data in smallest)


def _normalize_case(data: bytes, tally: Tally) -> None:
    try:
        alert = normalize(data, tenant_id="fuzz")
    except NormalizationError as exc:
        if not exc.reason:
            tally.crash(data, "NormalizationError without a reason")
        else:
            tally.outcomes[f"rejected: {_kind(exc.reason)}"] += 1
        return
    except Exception as exc:  # the finding: any other exception
        tally.crash(data, f"{type(exc).__name__}: {str(exc)[:200]}")
        return
    try:
        as_json = alert.model_dump(mode="json")
        text = json.dumps(as_json, allow_nan=False, ensure_ascii=False)
        text.encode("utf-8")
        problem = _jsonb_problem(as_json) or (
            None if json.loads(text) == as_json else "JSON does not round-trip")
    except Exception as exc:  # e.g. pydantic cannot serialize a value
        problem = f"serialization {type(exc).__name__}: {str(exc)[:200]}"
    if problem:
        tally.crash(data, problem)
    else:
        tally.outcomes["normalized"] += 1


def test_normalize_survives_every_alert() -> None:
    n = full_size(2_000, 100_000)
    tally = Tally()

    # Runs of at most 10,000 examples: hypothesis remembers every example of a run, and
    # one run of 100,000 slows down as that grows.
    @settings(FUZZ, max_examples=min(n, RUN), phases=[Phase.generate])
    @given(alert_bytes())
    def case(data: bytes) -> None:
        _normalize_case(data, tally)

    while tally.cases < n:
        case()
        print(f"normalize fuzz: {tally.cases:,} of {n:,} cases, "
              f"{tally.outcomes['crash']} crashes", flush=True)
    print(f"normalize: {tally.cases} cases: {dict(tally.outcomes.most_common())}")
    crashes = tally.outcomes["crash"]
    report_row("fuzz", {"cases through normalize": tally.cases, "crashes": crashes,
                        **dict(tally.outcomes.most_common(12))})
    report_figure("reliability.fuzz_cases", tally.cases,
                  goal="≥ 100,000 through normalize, 0 crashes")
    assert tally.cases >= n
    assert tally.outcomes["normalized"] > 0 and crashes < tally.cases
    assert crashes == 0, f"{crashes} of {tally.cases} crashed normalize:\n{tally.summary()}"


@dataclass
class _Sink:
    """Checks what it is handed as the Kafka sink does (every size before any send)."""

    max_alert_bytes: int
    published: int = 0

    async def publish(self, tenant_id: str, alerts: Sequence[bytes]) -> None:
        for value in alerts:
            check_size(len(value), self.max_alert_bytes)
        self.published += len(alerts)


def _bodies() -> st.SearchStrategy[tuple[bytes, str]]:
    """A request body and its content type: one alert, an array, JSON lines, an
    envelope — of hostile alerts."""
    many = st.lists(alert_bytes(), min_size=1, max_size=4)
    return st.one_of(
        alert_bytes().map(lambda a: (a, "application/json")),
        many.map(lambda items: (b"[" + b",".join(items) + b"]", "application/json")),
        many.map(lambda items: (b"\n".join(items), "application/x-ndjson")),
        many.map(lambda items: (b'{"alerts": [' + b",".join(items) + b"]}",
                                "application/json")),
    )


@contextmanager
def _ingest_client(sink: _Sink) -> Iterator[TestClient]:
    @asynccontextmanager
    async def resources(_: Settings) -> Any:
        yield IngestResources(auth=FakeAuth(), sink=sink)

    limits = IngestSettings(max_alert_bytes=sink.max_alert_bytes)
    with TestClient(create_ingest_app(Settings(ingest=limits), resources)) as client:
        yield client


def _ingest_case(client: TestClient, sink: _Sink, body: bytes, media: str,
                 tally: Tally) -> None:
    before = sink.published
    try:
        answer = client.post("/ingest/wazuh", content=body, headers={
            "Authorization": f"Bearer {KEY}", "Content-Type": media})
    except Exception as exc:  # the app raised instead of answering
        tally.crash(body, f"{type(exc).__name__}: {str(exc)[:200]}")
        return
    status = answer.status_code
    if status == 202:
        accepted = answer.json()["accepted"]
        if sink.published - before != accepted:
            tally.crash(body, f"202 for {accepted} alerts, {sink.published - before} handed on")
        else:
            tally.outcomes["accepted (202)"] += 1
        return
    if not 400 <= status < 500:
        tally.crash(body, f"HTTP {status}: {answer.text[:200]}")
        return
    message = answer.json().get("error", {}).get("message", "")
    if len(message) < 10 or sink.published != before:
        tally.crash(body, f"HTTP {status} with message {message!r}, "
                          f"{sink.published - before} published")
        return
    tally.outcomes[f"{status}: {_kind(message.split(': ', 1)[-1])}"] += 1


def test_ingest_endpoint_answers_every_body_with_2xx_or_a_4xx_naming_the_problem() -> None:
    n = full_size(300, 5_000)
    tally = Tally()
    sink = _Sink(max_alert_bytes=IngestSettings().max_alert_bytes)
    with _ingest_client(sink) as client:
        @settings(FUZZ, max_examples=n)
        @given(_bodies())
        def case(body_and_type: tuple[bytes, str]) -> None:
            _ingest_case(client, sink, *body_and_type, tally)

        case()
    print(f"ingest endpoint: {tally.cases} requests: {dict(tally.outcomes.most_common())}")
    crashes = tally.outcomes["crash"]
    report_row("fuzz: POST /ingest/wazuh", {"requests": tally.cases, "5xx or crash": crashes,
                                            **dict(tally.outcomes.most_common(10))})
    assert tally.cases >= n and tally.outcomes["accepted (202)"] > 0
    assert crashes == 0, f"{crashes} of {tally.cases} requests failed:\n{tally.summary()}"
