"""Usage per tenant and model over a period, aggregated in SQL (one GROUP BY).

Tokens and cost count what the model servers processed: completed requests (status 200)
and those cut by their caller, failed at the replica, abandoned by a killed process or
still in flight (schemas/usage.py `BILLED_SQL`). Refusals before any replica are no
longer rows (they are metrics); rows of refusals written by earlier versions are counted
as requests and rejections, never as tokens. Cost = tokens × the model's price per
million (usage.pricing; "default" for models not listed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg

from pipeline.config import ModelPrice
from schemas.usage import BILLED_SQL

_REPORT = f"""
WITH prices (model_name, input_per_million, output_per_million) AS (
    SELECT * FROM unnest(%(models)s::text[], %(inputs)s::float8[], %(outputs)s::float8[])
), usage AS (
    SELECT tenant_id, model_name,
           count(*) AS requests,
           count(*) FILTER (WHERE status_code = 200) AS succeeded,
           COALESCE(sum(input_tokens) FILTER (WHERE {BILLED_SQL}), 0) AS input_tokens,
           COALESCE(sum(output_tokens) FILTER (WHERE {BILLED_SQL}), 0) AS output_tokens,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY ttft_ms)
               FILTER (WHERE status_code = 200) AS ttft_p50_ms,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY ttft_ms)
               FILTER (WHERE status_code = 200) AS ttft_p95_ms,
           count(*) FILTER (WHERE status_code = 429) AS rejected_429,
           count(*) FILTER (WHERE status_code = 503) AS rejected_503,
           count(*) FILTER (WHERE status_code = 413) AS rejected_413,
           count(*) FILTER (WHERE status_code IS DISTINCT FROM 200
                              AND status_code NOT IN (413, 429, 503)) AS failed_other
    FROM llm_usage_events
    WHERE created_at >= %(since)s AND created_at < %(until)s
      AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s::text)
    GROUP BY tenant_id, model_name
)
SELECT u.*,
       (u.input_tokens * COALESCE(p.input_per_million, d.input_per_million)
        + u.output_tokens * COALESCE(p.output_per_million, d.output_per_million))
       / 1e6 AS estimated_cost
FROM usage u
LEFT JOIN prices p ON p.model_name = u.model_name
CROSS JOIN (SELECT * FROM prices WHERE model_name = 'default') d
ORDER BY u.tenant_id, u.model_name
"""


@dataclass(frozen=True)
class UsageRow:
    tenant_id: str
    model_name: str
    requests: int
    succeeded: int
    input_tokens: int
    output_tokens: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    rejected_429: int
    rejected_503: int
    rejected_413: int
    failed_other: int
    estimated_cost: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def usage_report(conn: psycopg.Connection, *, since: datetime, until: datetime,
                 pricing: Mapping[str, ModelPrice], tenant: str | None = None,
                 ) -> list[UsageRow]:
    if "default" not in pricing:
        raise ValueError("pricing needs a 'default' entry")
    names = list(pricing)
    params = {"models": names,
              "inputs": [pricing[n].input_per_million for n in names],
              "outputs": [pricing[n].output_per_million for n in names],
              "since": since, "until": until, "tenant": tenant}
    rows = conn.execute(_REPORT, params).fetchall()
    return [UsageRow(tenant_id=r[0], model_name=r[1], requests=int(r[2]),
                     succeeded=int(r[3]), input_tokens=int(r[4]), output_tokens=int(r[5]),
                     ttft_p50_ms=None if r[6] is None else float(r[6]),
                     ttft_p95_ms=None if r[7] is None else float(r[7]),
                     rejected_429=int(r[8]), rejected_503=int(r[9]), rejected_413=int(r[10]),
                     failed_other=int(r[11]), estimated_cost=float(r[12]))
            for r in rows]
