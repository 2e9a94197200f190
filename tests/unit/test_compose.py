"""docker-compose.yml, the single-host production stack: it validates against the compose
specification's JSON schema and keeps the invariants the stack relies on (pinned images,
health checks on the real endpoints, stages after the migrations, secrets from files only,
every metrics endpoint scraped). Its prometheus.yml passes `promtool check config`.

The schema is vendored as data: tests/data/compose-spec.json is `schema/compose-spec.json`
of github.com/compose-spec/compose-spec at commit a08f8d51631b7127ddac3d2c65537db429d0f1d0
(2025-10-21, the last change to the schema at the repository's head 170098b of
2026-06-23; Apache-2.0). Debian's docker-compose 1.29 is too old for today's specification
and no Docker engine runs here, hence the offline check.

promtool (Debian's `prometheus`) is installed by scripts/install-test-deps.sh; without it
that test skips, saying so, unless SECANALYST_REQUIRE_K8S_TOOLS or CI is set: there it fails.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from pipeline.config import Settings
from pipeline.runtime import STAGES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec.json"
APP_TOML = ROOT / "deploy" / "compose" / "secanalyst.toml"
MAKE_SECRETS = ROOT / "deploy" / "compose" / "make-secrets.sh"
PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
K8S_BASE = ROOT / "deploy" / "k8s" / "base" / "kustomization.yaml"
APP_IMAGE = "ghcr.io/secanalyst/secanalyst"

# An exact version tag (v1.2.3, 3.9.1, 7.4.2-alpine, 0.8.1-pg18), never a moving one.
EXACT_TAG = re.compile(r":v?\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?(@sha256:[0-9a-f]{64})?$")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|PEPPER|DATABASE__URL|REDIS_URL|API_KEY|"
                         r"ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
CREDENTIALS_IN_URL = re.compile(r"://[^/\s:@]+:[^/\s@]+@")
SECRET_FLAG = re.compile(r"--(requirepass|password|pass|token|secret)\b", re.IGNORECASE)
HEALTH_URL = re.compile(r"http://127\.0\.0\.1:(\d+)(/[\w/.-]*)")
SECRETS_DIR = "/run/secrets"
INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())  # YAML merge keys (<<) resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _schema_errors(document: dict[str, Any]) -> list[jsonschema.ValidationError]:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return sorted(jsonschema.Draft7Validator(schema).iter_errors(document), key=str)


def _command(service: dict[str, Any]) -> list[str]:
    return [str(part) for part in service.get("command", [])]


def _is_stage(service: dict[str, Any]) -> bool:
    return _command(service)[:2] == ["secanalyst", "run"]


def _long_running(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "no")) != "no"


def _depends(service: dict[str, Any]) -> dict[str, str]:
    """{service it waits for: condition}."""
    return {name: spec["condition"] for name, spec in service.get("depends_on", {}).items()}


def _interpolated(value: str) -> str:
    """The value as compose makes it with no variable set: ${VAR:-default} → default."""
    value = INTERPOLATION.sub(lambda m: m.group(2) or "", value)
    return value.replace("$$", "$")


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): _interpolated(str(v)) for k, v in env.items()}


def _secret_targets(service: dict[str, Any]) -> dict[str, str]:
    """{path in the container: top-level secret name} of the secrets a service mounts."""
    targets = {}
    for secret in service.get("secrets", []):
        source = secret if isinstance(secret, str) else secret["source"]
        target = source if isinstance(secret, str) else secret.get("target", source)
        targets[target if target.startswith("/") else f"{SECRETS_DIR}/{target}"] = source
    return targets


def _app_settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings an app container gets: its environment (SECANALYST_*), the compose
    secanalyst.toml, nothing from this machine's own environment."""
    for name in list(os.environ):
        if name.startswith("SECANALYST_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SECANALYST_CONFIG_FILE", str(APP_TOML))
    return Settings()


# --- the specification ---------------------------------------------------------------------

def test_the_file_validates_against_the_compose_specification(compose: dict[str, Any]) -> None:
    errors = _schema_errors(compose)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_the_schema_rejects_what_compose_would_reject(compose: dict[str, Any]) -> None:
    """The vendored schema is strict where it matters: a misspelt key or an unknown
    depends_on condition fails, so the test above can fail."""
    misspelt = copy.deepcopy(compose)
    misspelt["services"]["gateway"]["helthcheck"] = misspelt["services"]["gateway"].pop(
        "healthcheck")
    unknown_condition = copy.deepcopy(compose)
    unknown_condition["services"]["normalize"]["depends_on"]["migrate"]["condition"] = "done"
    for broken in (misspelt, unknown_condition):
        assert _schema_errors(broken)


# --- images ------------------------------------------------------------------------------

def test_every_image_is_pinned_to_an_exact_version(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image (a build alone is not a pinned, named image)"
        assert not re.search(r":latest(@|$)", image), f"{name}: {image}"
        assert EXACT_TAG.search(image), f"{name}: {image} is not pinned to an exact version"


def test_the_app_image_is_the_projects_version_and_matches_kubernetes(
        services: dict[str, dict[str, Any]]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    app = [s for s in services.values() if s["image"].startswith(f"{APP_IMAGE}:")]
    assert {s["image"] for s in app} == {f"{APP_IMAGE}:{version}"}
    assert all(s.get("build") == "." for s in app), "every app service can build the image"
    # third-party images shared with deploy/k8s run the same version in both
    k8s = {i["name"].removeprefix("docker.io/"): i["newTag"]
           for i in yaml.safe_load(K8S_BASE.read_text())["images"]}
    shared = 0
    for service in services.values():
        repository, _, tag = service["image"].partition(":")
        if repository in k8s:
            shared += 1
            assert tag == k8s[repository], f"{repository}: {tag} here, {k8s[repository]} in k8s"
    assert shared >= 2  # vLLM and kafka-exporter


def test_the_image_runs_the_code_beside_the_runbooks_it_loads(
        services: dict[str, dict[str, Any]]) -> None:
    """explain and the console read runbooks from DEFAULT_FOLDER, beside the package; the
    wheel has no runbooks, so the image must run the code from /app (PYTHONPATH), where
    runbooks/ is copied and runbooks-load reads them."""
    from pipeline.analysis.runbooks import DEFAULT_FOLDER

    assert DEFAULT_FOLDER == ROOT / "runbooks"
    dockerfile = (ROOT / "Dockerfile").read_text().splitlines()
    assert "WORKDIR /app" in dockerfile and "COPY runbooks runbooks" in dockerfile
    assert "ENV PYTHONPATH=/app" in dockerfile
    load = _command(services["runbooks-load"])
    assert load[load.index("--folder") + 1] == "/app/runbooks"


# --- health and order --------------------------------------------------------------------

def test_every_long_running_service_has_a_healthcheck(
        services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        if not _long_running(service):
            continue
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name}: no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"} and len(check["test"]) > 1, name


def _serves(command: list[str], settings: Settings, path: str) -> bool:
    """Whether the process of this command answers GET `path`, asked of the app itself
    (routes are matched as a request would be: no lifespan, nothing opened)."""
    if command[:2] in (["secanalyst", "run"], ["secanalyst", "wazuh-writeback"]):
        from pipeline.worker_health import WorkerHealth

        worker = WorkerHealth(None, None).app()  # type: ignore[arg-type]  # routes only
        return path in {r.canonical for r in worker.router.resources()}
    from starlette.routing import Match

    factories = {"gateway": "pipeline.web.gateway:create_gateway_app",
                 "ingest-server": "pipeline.web.ingest:create_ingest_app",
                 "serve": "pipeline.web.console.app:create_console_app"}
    module, _, function = factories[command[1]].partition(":")
    app = getattr(__import__(module, fromlist=[function]), function)(settings)
    scope = {"type": "http", "method": "GET", "path": path, "root_path": ""}
    return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)


def test_app_healthchecks_ask_the_real_endpoints_on_the_configured_ports(
        services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _app_settings({}, monkeypatch)
    ports = {"run": settings.worker.health_port, "wazuh-writeback": settings.worker.health_port,
             "gateway": settings.gateway.port,
             "ingest-server": settings.ingest.port, "serve": settings.console.port}
    checked = set()
    for name, service in services.items():
        command = _command(service)
        if command[:1] != ["secanalyst"] or command[1] not in ports:
            continue
        match = HEALTH_URL.search(" ".join(service["healthcheck"]["test"]))
        assert match, f"{name}: the healthcheck asks no URL"
        port, path = int(match.group(1)), match.group(2)
        assert port == ports[command[1]], f"{name}: checks port {port}"
        assert _serves(command, settings, path), f"{name}: {path} is not served"
        assert not _serves(command, settings, "/no-such-endpoint"), name  # no catch-all
        assert path != "/livez" or command[1] not in {"run", "wazuh-writeback"}, \
            f"{name}: ready, not only live"
        checked.add(command[1])
    assert checked == set(ports)
    gateway = services["gateway"]["healthcheck"]["test"]
    assert "/readyz" in " ".join(gateway), "the gateway is healthy only with a model replica"


def test_stages_start_after_the_migrations_completed(
        services: dict[str, dict[str, Any]]) -> None:
    stages = {_command(s)[-1]: s for s in services.values() if _is_stage(s)}
    assert set(stages) == set(STAGES), "one service per stage"
    migrate = next(n for n, s in services.items() if _command(s)[1:3] == ["db", "migrate"])
    assert not _long_running(services[migrate])
    assert _depends(services[migrate]) == {"postgres": "service_healthy"}
    for stage, service in stages.items():
        wants = _depends(service)
        assert wants.get(migrate) == "service_completed_successfully", stage
        assert wants.get("kafka") == "service_healthy", stage
    assert _depends(stages["explain"]).get("vllm") == "service_healthy"
    for name in ("gateway", "console"):
        assert _depends(services[name]).get(migrate) == "service_completed_successfully"


def test_nothing_uses_a_topic_before_a_stage_created_them(
        services: dict[str, dict[str, Any]]) -> None:
    """The stages create the topics with their partition count at start; the broker
    auto-creates none (it would with one partition). Producers and other consumers wait
    for a stage that is healthy, i.e. has created them and joined its group."""
    kafka = _environment(services["kafka"])
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    stages = {n for n, s in services.items() if _is_stage(s)}
    for name in ("ingest-server", "wazuh-writeback"):
        waits = {n for n, c in _depends(services[name]).items() if c == "service_healthy"}
        assert waits & stages, f"{name} may start before any topic exists"


def test_one_shot_jobs_are_one_shot_and_waited_for_by_completion(
        services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for other, condition in _depends(service).items():
            assert other in services, f"{name} waits for an unknown {other}"
            one_shot = not _long_running(services[other])
            assert one_shot == (condition == "service_completed_successfully"), \
                f"{name} waits for {other} with {condition}"
            assert condition != "service_healthy" or "healthcheck" in services[other]
    loads = [n for n, s in services.items() if _command(s)[1:3] == ["runbooks", "load"]]
    assert len(loads) == 1 and not _long_running(services[loads[0]])


def test_the_model_is_fetched_and_served_as_the_app_is_configured(
        services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _app_settings({}, monkeypatch)
    fetch = _command(services["model-fetch"])
    model_dir = fetch[fetch.index("--local-dir") + 1]
    vllm = _command(services["vllm"])
    assert vllm[0] == model_dir == str(settings.llm.tokenizer_path)
    assert _depends(services["vllm"]) == {"model-fetch": "service_completed_successfully"}
    flags = dict(zip(vllm[1::2], vllm[2::2], strict=False))
    pool = settings.llm.pools["default"]
    assert flags["--served-model-name"] == settings.llm.model_name
    assert int(flags["--max-model-len"]) == pool.max_context_tokens
    assert (flags.get("--scheduling-policy") == "priority") == pool.priority_scheduling
    assert pool.endpoints == ["http://vllm:8000/v1"] and flags["--port"] == "8000"
    for name in ("explain", "gateway"):  # they count tokens with the served tokenizer
        assert "models:/models:ro" in services[name]["volumes"], name
        assert "llm" in services[name]["networks"], f"{name} cannot reach vLLM"


# --- secrets -----------------------------------------------------------------------------

def test_no_password_or_secret_is_inline(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        mounted = _secret_targets(service)
        for key, value in _environment(service).items():
            assert not CREDENTIALS_IN_URL.search(value), f"{name}: {key} holds credentials"
            if SECRET_NAME.search(key):  # only where secrets are: a file or their folder
                assert key.endswith(("_FILE", "_DIR")), f"{name}: {key} set inline"
                assert value in mounted or (value == SECRETS_DIR and mounted), \
                    f"{name}: {key} names {value}, not a mounted secret"
        for part in _command(service) + [str(p) for p in service.get("entrypoint", [])]:
            assert not CREDENTIALS_IN_URL.search(part), f"{name}: credentials in its command"
            assert not SECRET_FLAG.search(part), f"{name}: a secret on its command line"


def test_secrets_are_files_outside_git(compose: dict[str, Any]) -> None:
    used = {source for s in compose["services"].values()
            for source in _secret_targets(s).values()}
    assert used == set(compose["secrets"]), "every secret declared is used, and only those"
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"}, f"{name}: not from a file"
        assert secret["file"].startswith("./deploy/compose/secrets/"), name
    ignored = (ROOT / "deploy" / "compose" / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignored, "the secret files must never be committed"


def test_the_app_reads_its_secrets_from_the_generated_files(
        services: dict[str, dict[str, Any]], compose: dict[str, Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """make-secrets.sh makes every file; mounted under the names compose gives them, each
    app service's settings load them (an unknown setting name would fail: extra=forbid)."""
    generated = tmp_path / "generated"
    out = subprocess.run(["sh", str(MAKE_SECRETS), str(generated)], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    declared = {Path(s["file"]).name for s in compose["secrets"].values()}
    assert declared <= {p.name for p in generated.iterdir()}
    password = (generated / "postgres_password").read_text()
    apps = {n: s for n, s in services.items() if _command(s)[:1] == ["secanalyst"]}
    for name, service in apps.items():
        env = _environment(service)
        mounted = _secret_targets(service)
        run_secrets = tmp_path / name
        run_secrets.mkdir()
        for target, source in mounted.items():
            assert target.startswith(f"{SECRETS_DIR}/SECANALYST_"), f"{name}: {target}"
            file = Path(compose["secrets"][source]["file"]).name
            shutil.copy(generated / file, run_secrets / Path(target).name)
        # set exactly where secrets are mounted: a missing folder is an error at start
        assert env.get("SECANALYST_SECRETS_DIR") == (SECRETS_DIR if mounted else None), name
        env["SECANALYST_SECRETS_DIR"] = str(run_secrets)
        settings = _app_settings(env, monkeypatch)
        if f"{SECRETS_DIR}/SECANALYST_DATABASE__URL" in mounted:
            assert settings.database_url == (
                f"postgresql://secanalyst:{password}@postgres:5432/secanalyst"), name
    gateway = _app_settings({"SECANALYST_SECRETS_DIR": str(tmp_path / "gateway")}, monkeypatch)
    assert gateway.gateway.api_key_pepper is not None and gateway.redis_url
    acl = (generated / "redis_acl").read_text()
    assert gateway.redis_url.split(":")[2].split("@")[0] in acl  # one password, both files


# --- monitoring ----------------------------------------------------------------------------

def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("SECANALYST_REQUIRE_K8S_TOOLS") or os.environ.get("CI"):
            pytest.fail("promtool is required here (scripts/install-test-deps.sh installs it)")
        pytest.skip("promtool is not installed (apt-get install -y prometheus)")
    return path


def test_prometheus_config_passes_promtool() -> None:
    out = subprocess.run([_promtool(), "check", "config", str(PROMETHEUS_YML)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{out.stdout}\n{out.stderr}"


def test_prometheus_scrapes_every_metrics_endpoint(
        services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _app_settings({}, monkeypatch)
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    scraped = {(name, sd["port"]) for job in config["scrape_configs"]
               for sd in job.get("dns_sd_configs", []) for name in sd["names"]}
    expected = {(n, settings.worker.health_port) for n, s in services.items() if _is_stage(s)}
    expected |= {("gateway", settings.gateway.port), ("ingest-server", settings.ingest.port),
                 ("vllm", 8000), ("kafka-exporter", 9308)}
    assert scraped == expected
    prometheus = set(services["prometheus"].get("networks", ["default"]))
    for name, _ in scraped:
        networks = set(services[name].get("networks", ["default"]))
        assert networks & prometheus, f"prometheus cannot reach {name}"
    vllm = next(j for j in config["scrape_configs"] if j["job_name"] == "vllm")
    assert {"target_label": "pool", "replacement": "default"} in vllm["relabel_configs"]


def test_prometheus_evaluates_the_cluster_alert_rules(
        services: dict[str, dict[str, Any]]) -> None:
    """One source of alert rules (the PrometheusRule promtool unit-tests); the copy here is
    current (`.venv/bin/python -m deploy.prometheus.sync_rules` rewrites it)."""
    from deploy.prometheus.sync_rules import TARGET, render

    assert TARGET.read_text() == render(), "stale: run python -m deploy.prometheus.sync_rules"
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    assert config["rule_files"] == [TARGET.name]  # checked by promtool check config too
    assert (f"./{TARGET.relative_to(ROOT)}:/etc/prometheus/{TARGET.name}:ro"
            in services["prometheus"]["volumes"])


def test_grafana_provisions_the_generated_dashboards(
        services: dict[str, dict[str, Any]]) -> None:
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in services["grafana"]["volumes"]
                  if v.startswith("./"))
    provisioning = GRAFANA / "provisioning"
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    provider = yaml.safe_load((provisioning / "dashboards" / "secanalyst.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == mounts["./deploy/grafana/dashboards"]
    source = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert _depends(services["grafana"]) == {"prometheus": "service_healthy"}
