"""Grafana dashboards as code (grafana-foundation-sdk): the LLM serving dashboard (tokens,
TTFT, queue depth, KV cache, cost per tenant, refusals, replicas) and the pipeline dashboard
(consumer lag, dead letters, records, batch latency).

`.venv/bin/python -m deploy.grafana.generate` writes them as JSON under
deploy/grafana/dashboards/ and as the ConfigMap Grafana's dashboard sidecar loads
(deploy/k8s/base/monitoring/grafana-dashboards.yaml). Both are committed:
tests/unit/test_dashboards.py fails while they differ from what this generates, and on any
panel whose PromQL reads a metric nobody exports.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig, VizLegendOptions
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
    TimeZoneUtc,
)
from grafana_foundation_sdk.models.dashboard import DataSourceRef

from pipeline.config import ModelPrice, Settings

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "deploy" / "grafana" / "dashboards"
CONFIGMAP = ROOT / "deploy" / "k8s" / "base" / "monitoring" / "grafana-dashboards.yaml"
# The prices come from the configuration the cluster runs with (usage.pricing).
CLUSTER_CONFIG = ROOT / "deploy" / "k8s" / "base" / "app" / "secanalyst.toml"

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "[$__rate_interval]"
ROW_HEIGHT = 8

PanelBuilder = timeseries.Panel | stat.Panel


def _query(expr: str, legend: str, ref: str) -> prometheus.Dataquery:
    return (prometheus.Dataquery().expr(" ".join(expr.split())).legend_format(legend)
            .ref_id(ref).datasource(DATASOURCE))


def _graph(title: str, description: str, unit: str, *queries: tuple[str, str],
           stacked: bool = False, width: int = 12) -> timeseries.Panel:
    """A time series of one or more PromQL queries (each with its legend)."""
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(DATASOURCE).height(ROW_HEIGHT).span(width).min(0)
             .legend(VizLegendOptions().display_mode(LegendDisplayMode.TABLE)
                     .placement(LegendPlacement.BOTTOM).show_legend(True)
                     .calcs(["lastNotNull", "max"])))
    if stacked:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(30)
    for ref, (expr, legend) in zip("ABCDEFGH", queries, strict=False):
        panel = panel.with_target(_query(expr, legend, ref))
    return panel


def _stat(title: str, description: str, expr: str, legend: str,
          width: int = 6) -> stat.Panel:
    return (stat.Panel().title(title).description(description).datasource(DATASOURCE)
            .height(4).span(width).with_target(_query(expr, legend, "A")))


def cost_per_hour_expr(pricing: Mapping[str, ModelPrice]) -> str:
    """Estimated cost per hour by tenant: tokens/s × the model's price per million tokens
    (usage.pricing; "default" prices every model not listed), × 3600 / 1e6. The terms are
    joined with `or` (their label sets differ by model and kind), then summed by tenant."""
    named = sorted(m for m in pricing if m != "default")
    terms = []
    for model in [*named, "default"]:
        price = pricing[model]
        selector = (f'model="{model}"' if model != "default" else
                    f'model!~"{"|".join(named)}"' if named else 'model=~".*"')
        for kind, per_million in (("input", price.input_per_million),
                                  ("output", price.output_per_million)):
            terms.append(f'rate(secanalyst_llm_tokens_total{{kind="{kind}",{selector}}}'
                         f'{RATE}) * {per_million * 3600 / 1e6:.10g}')
    return "sum by (tenant) (" + " or ".join(terms) + ")"


def _ttft(quantile: str, source: str) -> str:
    if source == "router":
        return (f"histogram_quantile({quantile}, sum by (pool, le) "
                f"(rate(secanalyst_llm_ttft_seconds_bucket{RATE})))")
    return (f"histogram_quantile({quantile}, sum by (pool, le) "
            f"(rate(vllm:time_to_first_token_seconds_bucket{RATE})))")


def llm_panels(pricing: Mapping[str, ModelPrice]) -> list[tuple[str, list[PanelBuilder]]]:
    return [
        ("Throughput and latency", [
            _graph("Token throughput", "Tokens per second the router charged, by pool "
                   "and kind (input: prompt; output: generated).", "short",
                   (f"sum by (pool, kind) (rate(secanalyst_llm_tokens_total{RATE}))",
                    "{{pool}} {{kind}}"),
                   (f"sum(rate(vllm:generation_tokens_total{RATE}))",
                    "generated (vLLM, all replicas)"), stacked=False),
            _graph("Time to first token p50 / p95", "As clients see it (measured by the "
                   "router) and inside vLLM. The alert fires on p95 over the pool's target.",
                   "s", (_ttft("0.5", "router"), "p50 {{pool}}"),
                   (_ttft("0.95", "router"), "p95 {{pool}}"),
                   (_ttft("0.95", "vllm"), "p95 {{pool}} (vLLM)")),
        ]),
        ("Replicas and queues", [
            _graph("Queue depth", "Requests waiting in (and running on) the vLLM replicas, "
                   "by pool: KEDA scales each pool on the waiting ones.", "short",
                   ("sum by (pool) (vllm:num_requests_waiting)", "waiting {{pool}}"),
                   ("sum by (pool) (vllm:num_requests_running)", "running {{pool}}"), width=8),
            _graph("KV-cache usage", "Share of each replica's KV cache in use (1 = full: "
                   "new requests wait or preempt others).", "percentunit",
                   ("max by (pool, pod) (vllm:kv_cache_usage_perc)", "{{pool}} {{pod}}"),
                   width=8),
            _graph("Replicas", "Per pool: routed (healthy, gets requests), joining "
                   "(discovered, /health not passed yet), draining (gone from discovery); "
                   "discovered = all three.", "short",
                   ("max by (pool, state) (secanalyst_llm_replicas)", "{{pool}} {{state}}"),
                   ("sum by (pool) (max by (pool, state) (secanalyst_llm_replicas))",
                    "{{pool}} discovered"), width=8),
            _stat("Model server circuit open", "1 while an explain stage's circuit breaker "
                  "holds every call to the model servers back (all replicas failing).",
                  "max(secanalyst_circuit_open)", "open"),
            _stat("Healthy replicas", "Replicas the router sends requests to, all pools.",
                  "sum(max by (pool) (secanalyst_llm_replicas{state=\"routed\"}))",
                  "routed"),
            _stat("Admission queue p95 wait", "How long requests waited for a replica "
                  "slot in the router's admission queue (admitted ones).",
                  f"histogram_quantile(0.95, sum by (le) (rate("
                  f"secanalyst_llm_queue_wait_seconds_bucket{{outcome=\"admitted\"}}{RATE})))",
                  "p95"),
            _stat("Router processes", "Gateway replicas and explain stages routing to the "
                  "model servers (heartbeats in Redis): each applies 1/this of the "
                  "admission limits.", "max(secanalyst_llm_router_peers)", "routers"),
        ]),
        ("Tenants and refusals", [
            _graph("Cost per tenant (estimate, per hour)", "Tokens per tenant × "
                   "usage.pricing of the model (currency units per hour).", "currencyUSD",
                   (cost_per_hour_expr(pricing), "{{tenant}}"), stacked=True, width=8),
            _graph("Tokens per tenant", "Tokens per second charged to each tenant.", "short",
                   (f"sum by (tenant) (rate(secanalyst_llm_tokens_total{RATE}))",
                    "{{tenant}}"), stacked=True, width=8),
            _graph("Rejections by reason", "Requests refused per second (quota, saturated, "
                   "no healthy replica, context too long, unauthorized ...).", "reqps",
                   (f"sum by (reason) (rate(secanalyst_llm_rejections_total{RATE}))",
                    "{{reason}}"), stacked=True, width=8),
        ]),
    ]


def pipeline_panels() -> list[tuple[str, list[PanelBuilder]]]:
    return [
        ("Kafka consumers", [
            _graph("Consumer lag", "Records behind the log end, by stage and lane (summed "
                   "over partitions). Live lanes should stay near 0; batch lags by design.",
                   "short", ("sum by (stage, lane) (secanalyst_stage_consumer_lag)",
                             "{{stage}} {{lane}}")),
            _graph("Dead letters", "Records sent to alerts.dlq per second, by stage and "
                   "reason class.", "short",
                   (f"sum by (stage, reason) (rate(secanalyst_stage_dead_letters_total{RATE}))",
                    "{{stage}} {{reason}}"), stacked=True),
            _graph("Records in / out", "Records each stage committed (in) and finished "
                   "without dead-lettering (out), per second.", "short",
                   (f"sum by (stage) (rate(secanalyst_stage_records_in_total{RATE}))",
                    "in {{stage}}"),
                   (f"sum by (stage) (rate(secanalyst_stage_records_out_total{RATE}))",
                    "out {{stage}}")),
            _graph("Batch latency p95", "Time to handle and commit a batch, by stage.", "s",
                   (f"histogram_quantile(0.95, sum by (stage, le) "
                    f"(rate(secanalyst_stage_batch_seconds_bucket{{outcome=\"committed\"}}"
                    f"{RATE})))", "{{stage}}")),
        ]),
        ("Ingest", [
            _graph("Ingest requests", "POST /ingest/wazuh answers per second, by outcome.",
                   "reqps", (f"sum by (outcome) (rate(secanalyst_ingest_requests_total{RATE}))",
                             "{{outcome}}"), stacked=True),
            _graph("Alerts accepted", "Alerts acknowledged by Kafka per second, by tenant.",
                   "short", (f"sum by (tenant) (rate(secanalyst_ingest_alerts_total{RATE}))",
                             "{{tenant}}"), stacked=True),
        ]),
    ]


def _dashboard(uid: str, title: str, rows: Sequence[tuple[str, Sequence[PanelBuilder]]]
               ) -> dashboard.Dashboard:
    board = (dashboard.Dashboard(title).uid(uid).tags(["secanalyst", "generated"])
             .refresh("30s").time("now-3h", "now").timezone(TimeZoneUtc).readonly()
             .with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus")
                            .type("prometheus")))
    ids = iter(range(1, 1000))
    for title_of_row, panels in rows:
        board = board.with_row(dashboard.Row(title_of_row).id(next(ids)))
        for panel in panels:
            board = board.with_panel(panel.id(next(ids)))
    return board


def dashboards(pricing: Mapping[str, ModelPrice]) -> dict[str, dashboard.Dashboard]:
    """File name → dashboard builder."""
    return {
        "secanalyst-llm.json": _dashboard("secanalyst-llm", "secanalyst / LLM serving",
                                          llm_panels(pricing)),
        "secanalyst-pipeline.json": _dashboard("secanalyst-pipeline", "secanalyst / pipeline",
                                               pipeline_panels()),
    }


def cluster_pricing() -> Mapping[str, ModelPrice]:
    return Settings(**tomllib.loads(CLUSTER_CONFIG.read_text())).usage.pricing


def render(pricing: Mapping[str, ModelPrice] | None = None) -> dict[str, str]:
    """File name → the dashboard's JSON text, as committed."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    boards = dashboards(cluster_pricing() if pricing is None else pricing)
    return {name: encoder.encode(board.build()) + "\n" for name, board in boards.items()}


def configmap(rendered: Mapping[str, str]) -> str:
    """The ConfigMap Grafana's dashboard sidecar (label grafana_dashboard) loads."""
    doc = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "secanalyst-grafana-dashboards", "namespace": "secanalyst",
                     "labels": {"grafana_dashboard": "1"},
                     "annotations": {"grafana_folder": "secanalyst"}},
        "data": dict(sorted(rendered.items())),
    }
    header = ("# Generated by deploy/grafana/generate.py from the same code as "
              "deploy/grafana/dashboards/: do not edit.\n")
    return header + yaml.dump(doc, Dumper=_BlockDumper, sort_keys=False, width=100)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (the dashboards' JSON) as literal blocks, readable in a diff."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def write() -> list[Path]:
    rendered = render()
    DASHBOARDS.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered.items():
        (DASHBOARDS / name).write_text(text)
        written.append(DASHBOARDS / name)
    CONFIGMAP.write_text(configmap(rendered))
    return [*written, CONFIGMAP]


def main() -> None:
    for path in write():
        print(path.relative_to(ROOT))


if __name__ == "__main__":
    main()
