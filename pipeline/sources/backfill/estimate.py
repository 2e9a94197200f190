"""What a backfill will cost, before anything is sent: alerts, distinct fingerprints
(storm de-duplication explains one alert per fingerprint at most, so fingerprints bound
the LLM calls), expected tokens and cost at the configured price."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pipeline.analysis.normalize import NormalizationError, normalize
from pipeline.config import Settings
from pipeline.sources.backfill.filters import AlertFilter, parse_line


@dataclass(frozen=True)
class TokensPerVerdict:
    input_tokens: float
    output_tokens: float
    source: str  # "llm_usage_events (n calls)" or "configured default"


@dataclass
class Estimate:
    lines: int = 0
    alerts: int = 0  # replayed (after filters), malformed lines included
    filtered_out: int = 0
    malformed: int = 0
    fingerprints: set[str] = field(default_factory=set)
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float = 0.0
    tokens_source: str = ""
    problems: list[str] = field(default_factory=list)  # damaged files, by name

    @property
    def distinct_fingerprints(self) -> int:
        return len(self.fingerprints)


def count_alerts(lines: Iterable[bytes], alert_filter: AlertFilter, estimate: Estimate,
                 tenant_id: str, *, max_alert_bytes: int = 1_000_000) -> None:
    for data in lines:
        estimate.lines += 1
        parsed = parse_line(data, max_bytes=max_alert_bytes)
        if parsed.document is not None and not alert_filter.matches(parsed.document):
            estimate.filtered_out += 1
            continue
        estimate.alerts += 1
        if parsed.refusal is not None:
            estimate.malformed += 1  # dead-lettered by the replay itself
            continue
        try:
            alert = normalize(data, tenant_id=tenant_id, priority="batch")
        except NormalizationError:
            estimate.malformed += 1
            continue
        estimate.fingerprints.add(alert.fingerprint)


def price(settings: Settings, estimate: Estimate, per_verdict: TokensPerVerdict) -> None:
    calls = estimate.distinct_fingerprints
    estimate.input_tokens = round(calls * per_verdict.input_tokens)
    estimate.output_tokens = round(calls * per_verdict.output_tokens)
    pricing = settings.usage.pricing
    model = pricing.get(settings.llm.model_name, pricing["default"])
    estimate.cost = (estimate.input_tokens * model.input_per_million
                     + estimate.output_tokens * model.output_per_million) / 1_000_000
    estimate.tokens_source = per_verdict.source


def default_tokens(settings: Settings) -> TokensPerVerdict:
    return TokensPerVerdict(settings.ingest.default_input_tokens_per_verdict,
                            settings.ingest.default_output_tokens_per_verdict,
                            "configured default")


def measured_tokens(settings: Settings, *, min_calls: int = 10) -> TokensPerVerdict:
    """The mean tokens of successful explain calls in the last 30 days, else the default
    (also when the database cannot be reached)."""
    import psycopg

    try:
        with psycopg.connect(settings.database_url, connect_timeout=3) as conn:
            row = conn.execute(
                """SELECT count(*), avg(input_tokens)::float8, avg(output_tokens)::float8
                   FROM llm_usage_events
                   WHERE alert_id IS NOT NULL AND status_code = 200
                     AND created_at > now() - interval '30 days'""").fetchone()
    except psycopg.Error:
        return default_tokens(settings)
    if row is None or row[0] < min_calls:
        return default_tokens(settings)
    return TokensPerVerdict(row[1], row[2], f"llm_usage_events ({row[0]} calls)")
