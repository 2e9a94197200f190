"""Usage over a period, aggregated in SQL: per tenant and model for `usage report`
(one GROUP BY), and per day for the console's usage page (`usage_overview`).

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
from psycopg import AsyncConnection
from psycopg.rows import dict_row

from pipeline.config import ModelPrice
from schemas.usage import BILLED_SQL

# The price list as a table (usage.pricing): %(models)s, %(inputs)s, %(outputs)s.
_PRICES = """prices (model_name, input_per_million, output_per_million) AS (
    SELECT * FROM unnest(%(models)s::text[], %(inputs)s::float8[], %(outputs)s::float8[]))"""

_REPORT = f"""
WITH {_PRICES}, usage AS (
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
    params = {**_price_params(pricing), "since": since, "until": until, "tenant": tenant}
    rows = conn.execute(_REPORT, params).fetchall()
    return [UsageRow(tenant_id=r[0], model_name=r[1], requests=int(r[2]),
                     succeeded=int(r[3]), input_tokens=int(r[4]), output_tokens=int(r[5]),
                     ttft_p50_ms=None if r[6] is None else float(r[6]),
                     ttft_p95_ms=None if r[7] is None else float(r[7]),
                     rejected_429=int(r[8]), rejected_503=int(r[9]), rejected_413=int(r[10]),
                     failed_other=int(r[11]), estimated_cost=float(r[12]))
            for r in rows]


def _price_params(pricing: Mapping[str, ModelPrice]) -> dict[str, list[Any]]:
    names = list(pricing)
    return {"models": names, "inputs": [pricing[n].input_per_million for n in names],
            "outputs": [pricing[n].output_per_million for n in names]}


# ---- the console's usage page (under the policies) ------------------------------------

_DAILY = f"""
WITH {_PRICES}
SELECT date_trunc('day', e.created_at AT TIME ZONE 'UTC')::date AS day, e.tenant_id,
       e.model_name,
       sum(e.input_tokens + e.output_tokens) FILTER (WHERE e.status_code = 200) AS tokens,
       sum((e.input_tokens * COALESCE(p.input_per_million, d.input_per_million)
            + e.output_tokens * COALESCE(p.output_per_million, d.output_per_million)) / 1e6)
           FILTER (WHERE e.status_code = 200) AS cost,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY e.ttft_ms)
           FILTER (WHERE e.status_code = 200) AS ttft_p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY e.ttft_ms)
           FILTER (WHERE e.status_code = 200) AS ttft_p95_ms,
       count(*) AS requests
FROM llm_usage_events e
LEFT JOIN prices p ON p.model_name = e.model_name
CROSS JOIN (SELECT * FROM prices WHERE model_name = 'default') d
WHERE e.created_at >= %(since)s AND e.created_at < %(until)s
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"""

_REJECTIONS = """
SELECT COALESCE(error_kind, 'http_' || status_code::text, 'unknown') AS reason,
       count(*) AS requests
FROM llm_usage_events
WHERE created_at >= %(since)s AND created_at < %(until)s
  AND status_code IS DISTINCT FROM 200
GROUP BY 1 ORDER BY 2 DESC"""

_TOP_RULES = """
SELECT v.rule_id, sum(e.input_tokens + e.output_tokens) AS tokens, count(*) AS requests
FROM llm_usage_events e
JOIN verdicts v ON v.tenant_id = e.tenant_id AND v.alert_id = e.alert_id
WHERE e.created_at >= %(since)s AND e.created_at < %(until)s AND e.status_code = 200
GROUP BY v.rule_id ORDER BY tokens DESC LIMIT 10"""


async def usage_overview(conn: AsyncConnection, *, since: datetime, until: datetime,
                         pricing: Mapping[str, ModelPrice],
                         all_tenants: bool = False) -> dict[str, Any]:
    """Daily tokens/cost/TTFT per tenant and model, rejections by reason, top rules (of
    the signed-in tenant's verdicts). `all_tenants` widens the usage rows to every tenant
    (the policy on llm_usage_events allows it for the platform's admins only)."""
    if all_tenants:
        await conn.execute("SELECT set_config('app.usage_all_tenants', 'on', true)")
    params = {**_price_params(pricing), "since": since, "until": until}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(_DAILY, params)
        daily = await cur.fetchall()
        await cur.execute(_REJECTIONS, params)
        rejections = await cur.fetchall()
        await cur.execute(_TOP_RULES, params)
        top_rules = await cur.fetchall()
    for row in daily:
        row["tokens"] = int(row["tokens"] or 0)
        row["cost"] = float(row["cost"] or 0.0)
    return {"daily": daily, "rejections": rejections, "top_rules": top_rules}
