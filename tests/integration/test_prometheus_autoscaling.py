"""The autoscaling signal of the vLLM pools, proven on real metrics.

A real Prometheus (Debian's `prometheus`, run here on a free port, scraping every second)
scrapes what it scrapes in the cluster: the gateway (`secanalyst gateway` with its own
PostgreSQL), a normalize stage consumer (`run_worker` with its health port, on the
embedded Kafka) and two vLLM simulator replicas labelled as the vLLM ServiceMonitor labels
them (namespace, pool). The KEDA ScaledObject of the pool is read from the rendered prod
overlay (`kubectl kustomize`) at test time, and each of its Prometheus triggers' exact
PromQL is evaluated through Prometheus' HTTP API:

- idle: no trigger asks for more replicas than the pool has (the queue-depth query answers
  0; the p95 TTFT query answers nothing, which its ignoreNullValues lets KEDA read as 0);
- under load through the gateway (more concurrent requests than the replicas' slots):
  every trigger asks for more replicas;
- after the load, with ordinary traffic going on: every trigger falls back. The queue
  drains at once; the p95 TTFT over the trigger's 2-minute window falls once the burst's
  slow first tokens are under 5% of the window's requests (with no traffic at all it
  would answer nothing after 2 minutes — not waited for here).

Replicas KEDA's HPA asks for from one trigger: AverageValue → ceil(value / threshold);
Value → ceil(current replicas × value / threshold).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import yaml

from bench.common import varied_alerts
from bench.config_errors import closed_port
from pipeline.cli.usage import create_api_key
from pipeline.config import Settings, WorkerSettings
from pipeline.worker import run_worker
from tests.integration.conftest import ROOT, session_settings, wait_for
from tests.integration.gateway_stack import MODEL, GatewayStack, gateway_stack
from tests.integration.prometheus_server import (
    Prometheus,
    ScrapeJob,
    prometheus_server,
    required_tool,
)
from tests.integration.test_worker_telemetry import publish

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

OVERLAY = ROOT / "deploy" / "k8s" / "overlays" / "prod"
POOL = "default"  # the pool the gateway stack serves
REPLICAS = 2
# One sequence per replica, ~1 s per 16-token answer: a handful of clients fill the queues.
SIM_FLAGS = ["--max-num-seqs", "1", "--itl-ms", "60", "--output-tokens", "16",
             "--prefill-ms-per-token", "0.2"]
BURST_CLIENTS = 16
STEADY_CLIENTS = 4
ALERTS = 12


@dataclass(frozen=True)
class Trigger:
    name: str
    query: str
    threshold: float
    metric_type: str  # AverageValue | Value
    ignore_null: bool

    def desired(self, value: float | None, replicas: int) -> int:
        """Replicas the HPA asks for from this trigger alone (0: no opinion)."""
        if value is None:
            if not self.ignore_null:
                raise AssertionError(f"{self.name}: {self.query!r} answered nothing")
            return 0
        if self.metric_type == "AverageValue":
            return math.ceil(value / self.threshold)
        return math.ceil(replicas * value / self.threshold)


def pool_scaled_object(pool: str) -> dict[str, Any]:
    kubectl = required_tool("kubectl", "kubectl")
    rendered = subprocess.run([kubectl, "kustomize", str(OVERLAY)], check=True,
                              capture_output=True, text=True, timeout=120).stdout
    found = [doc for doc in yaml.safe_load_all(rendered) if doc
             and doc["kind"] == "ScaledObject"
             and doc["metadata"].get("labels", {}).get("secanalyst.io/pool") == pool]
    assert len(found) == 1, f"{len(found)} ScaledObjects for the vLLM pool {pool!r}"
    return found[0]


def prometheus_triggers(scaled_object: dict[str, Any]) -> list[Trigger]:
    triggers = [Trigger(t["name"], t["metadata"]["query"], float(t["metadata"]["threshold"]),
                        t.get("metricType", "AverageValue"),
                        t["metadata"].get("ignoreNullValues", "true") == "true")
                for t in scaled_object["spec"]["triggers"] if t["type"] == "prometheus"]
    names = " ".join(t["metadata"]["query"] for t in scaled_object["spec"]["triggers"])
    assert "vllm:num_requests_waiting" in names and "vllm:time_to_first_token" in names
    return triggers


def desired(prometheus: Prometheus, triggers: list[Trigger]) -> dict[str, tuple[float | None, int]]:
    """Each trigger's value now and the replicas it asks for."""
    values = {t.name: prometheus.scalar(t.query) for t in triggers}
    return {t.name: (values[t.name], t.desired(values[t.name], REPLICAS)) for t in triggers}


async def poll_until(prometheus: Prometheus, triggers: list[Trigger], done: Callable[[int], bool],
                     timeout_s: float) -> dict[str, tuple[float | None, int]]:
    """Evaluates the triggers every second until `done(desired)` holds for every one."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = await asyncio.to_thread(desired, prometheus, triggers)
        if all(done(count) for _, count in now.values()) or time.monotonic() > deadline:
            return now
        await asyncio.sleep(1)


async def clients(gateway: GatewayStack, key: str, count: int, max_tokens: int,
                  stop: asyncio.Event, statuses: list[int]) -> None:
    """`count` closed-loop callers through the gateway until `stop`; then their last calls
    finish (nothing is cut off)."""
    async def caller(n: int, client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            body = {"model": MODEL, "max_tokens": max_tokens, "messages": [
                {"role": "user", "content": f"Summarize alert {n}: failed logon for admin"}]}
            response = await client.post("/v1/chat/completions", json=body)
            statuses.append(response.status_code)

    async with httpx.AsyncClient(base_url=gateway.url, timeout=60,
                                 headers={"Authorization": f"Bearer {key}"},
                                 limits=httpx.Limits(max_connections=count)) as client:
        await asyncio.gather(*(caller(n, client) for n in range(count)))


def scrape_jobs(gateway: GatewayStack, health_port: int,
                scaled_object: dict[str, Any]) -> list[ScrapeJob]:
    # As the vLLM ServiceMonitor does: the pod's namespace, and `pool` from its pod label.
    vllm_labels = {"namespace": scaled_object["metadata"]["namespace"], "pool": POOL}
    return [ScrapeJob("gateway", [gateway.url.removeprefix("http://")]),
            ScrapeJob("stage-normalize", [f"127.0.0.1:{health_port}"]),
            ScrapeJob("vllm", [u.removeprefix("http://").removesuffix("/v1")
                               for u in gateway.sims], vllm_labels)]


async def consumer_ready(port: int) -> bool:
    async with httpx.AsyncClient(timeout=5) as client:
        with contextlib.suppress(httpx.TransportError):
            return (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
    return False


async def test_keda_vllm_triggers_cross_their_thresholds_under_load_and_fall_back(
        settings: Settings, run_id: str) -> None:
    started = time.monotonic()
    scaled_object = pool_scaled_object(POOL)
    triggers = prometheus_triggers(scaled_object)
    health_port = closed_port()
    consumer = session_settings(f"{run_id}pa").model_copy(
        update={"worker": WorkerSettings(health_port=health_port)})
    stop_worker = asyncio.Event()
    # The consumer joins its groups while the gateway's stack starts (in a thread).
    worker = asyncio.create_task(run_worker(consumer, ["normalize"], stop_worker))
    stack = gateway_stack("autoscaling", SIM_FLAGS, max_context_tokens=2048, replicas=REPLICAS,
                          tenants={"load": {"tokens_per_minute": 10_000_000}})
    try:
        gateway = await asyncio.to_thread(stack.__enter__)
        try:
            _, key = await asyncio.to_thread(create_api_key, gateway.settings, "load")
            with prometheus_server(scrape_jobs(gateway, health_port, scaled_object)) as prom:
                assert await wait_for(lambda: consumer_ready(health_port), timeout_s=60,
                                      interval_s=0.5)
                await publish(consumer, "tenant-autoscaling", varied_alerts(ALERTS))
                print(f"set up in {time.monotonic() - started:.0f} s")
                await check_idle(prom, triggers)
                await check_burst_and_fall_back(prom, triggers, gateway, key)
                await check_scraped_components(prom)
        finally:
            await asyncio.to_thread(stack.__exit__, None, None, None)
    finally:
        stop_worker.set()
        await asyncio.wait_for(worker, 60)
    print(f"done in {time.monotonic() - started:.0f} s")


async def check_idle(prom: Prometheus, triggers: list[Trigger]) -> None:
    async def scraped() -> bool:
        return (await asyncio.to_thread(prom.targets_up, "vllm") == REPLICAS
                and await asyncio.to_thread(prom.targets_up, "gateway") == 1
                and await asyncio.to_thread(prom.targets_up, "stage-normalize") == 1)

    assert await wait_for(scraped, timeout_s=20, interval_s=0.5), "targets not up"
    idle = await poll_until(prom, triggers, lambda count: count <= REPLICAS, timeout_s=5)
    print("idle", idle)
    assert all(count <= REPLICAS for _, count in idle.values()), idle
    queue = next(t for t in triggers if t.metric_type == "AverageValue")
    assert idle[queue.name][0] == 0.0, idle  # the series exist, with the trigger's labels


async def check_burst_and_fall_back(prom: Prometheus, triggers: list[Trigger],
                                    gateway: GatewayStack, key: str) -> None:
    statuses: list[int] = []
    stop_burst = asyncio.Event()
    burst = asyncio.create_task(clients(gateway, key, BURST_CLIENTS, 16, stop_burst, statuses))
    loaded = await poll_until(prom, triggers, lambda count: count > REPLICAS, timeout_s=40)
    stop_burst.set()
    await burst
    print("under load", loaded, "after", len(statuses), "requests")
    assert all(count > REPLICAS for _, count in loaded.values()), loaded

    stop_steady = asyncio.Event()
    steady = asyncio.create_task(clients(gateway, key, STEADY_CLIENTS, 1, stop_steady,
                                         statuses))
    calm = await poll_until(prom, triggers, lambda count: count <= REPLICAS, timeout_s=45)
    stop_steady.set()
    await steady
    print("after the burst", calm, "after", len(statuses), "requests")
    assert all(count <= REPLICAS for _, count in calm.values()), calm
    assert set(statuses) == {200}, sorted(set(statuses))


async def check_scraped_components(prom: Prometheus) -> None:
    """The consumer's and the gateway's own metrics reached Prometheus too, and the gateway
    spread the load over both replicas."""
    async def consumed() -> bool:
        value = await asyncio.to_thread(prom.scalar, 'sum(secanalyst_stage_records_in_total'
                                        '{job="stage-normalize",stage="normalize"})')
        return value is not None and value >= ALERTS

    assert await wait_for(consumed, timeout_s=20, interval_s=0.5)
    served = prom.scalar('sum(secanalyst_llm_requests_total{job="gateway",status="200"})')
    assert served is not None and served > 0
    per_replica = prom.query('sum by (instance) (vllm:request_success_total{job="vllm"})')
    assert len(per_replica) == REPLICAS and all(n > 0 for _, n in per_replica), per_replica
