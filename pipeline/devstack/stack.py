"""`secanalyst dev up | down | status`: the embedded default stack, one service each,
skipped when its external address is configured; with `--consumers`, `secanalyst run` too
(pipeline/devstack/consumers.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from pipeline.config import Settings
from pipeline.devstack.consumers import ManagedConsumers
from pipeline.devstack.kafka import TansuBroker
from pipeline.devstack.postgres import EmbeddedPostgres
from pipeline.devstack.seaweedfs import SeaweedS3
from pipeline.devstack.vllm import EmbeddedVLLM


class Service(Protocol):
    name: str

    def running(self) -> bool: ...
    def start(self) -> None: ...
    def stop(self) -> bool: ...
    def address(self) -> str: ...


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    embedded: bool
    running: bool | None  # None: external, not ours to check
    address: str


def embedded_broker(settings: Settings) -> list[Service]:
    """The broker, after its storage when that is S3 (started first, stopped last).

    A broker already running keeps the storage it was started with (`dev down` then
    `dev up` switches), so no SeaweedFS is started for a running memory broker."""
    state = settings.state_dir.resolve()
    storage = SeaweedS3(state, settings.dev.seaweedfs_port)
    current = TansuBroker(state, settings.dev.kafka_port).running_storage()
    if (current or settings.dev.kafka_storage) == "memory":
        return [TansuBroker(state, settings.dev.kafka_port)]
    return [storage, TansuBroker(state, settings.dev.kafka_port, storage)]


def embedded_services(settings: Settings) -> list[Service]:
    state = settings.state_dir.resolve()
    services: dict[str, list[Service]] = {
        "postgres": [EmbeddedPostgres(state, settings.dev.postgres_port)],
        "kafka": embedded_broker(settings) if "kafka" in settings.embedded_services else [],
        "vllm": [EmbeddedVLLM(state, settings.cache_dir, port=settings.dev.vllm_port,
                              version=settings.dev.vllm_version,
                              served_model_name=settings.llm.model_name,
                              kv_cache_gib=settings.dev.vllm_kv_cache_gib,
                              max_model_len=settings.dev.vllm_max_model_len,
                              cpu_bind=settings.dev.vllm_cpu_bind)],
    }
    return [s for name in settings.embedded_services for s in services[name]]


def up(settings: Settings, *, consumers: bool = False) -> list[ServiceStatus]:
    for service in embedded_services(settings):
        service.start()
    if consumers:  # after the services they consume from
        ManagedConsumers(settings.state_dir.resolve()).start()
    return status(settings)


def down(settings: Settings) -> list[str]:
    # Reverse order: consumers of the broker and database go first.
    services = [ManagedConsumers(settings.state_dir.resolve()),
                *reversed(embedded_services(settings))]
    return [s.name for s in services if s.stop()]


def status(settings: Settings) -> list[ServiceStatus]:
    embedded = {s.name: s for s in embedded_services(settings)}
    external = {"postgres": settings.database_url, "kafka": settings.kafka_bootstrap,
                "vllm": ", ".join(e for p in settings.llm_pools.values() for e in p.endpoints)}
    rows = []
    for name in ("postgres", "seaweedfs", "kafka", "vllm"):
        if name == "seaweedfs" and name not in embedded:
            continue  # the broker's storage: a row only when it is part of the stack
        if name in embedded:
            rows.append(ServiceStatus(name, True, embedded[name].running(),
                                      embedded[name].address()))
        else:
            rows.append(ServiceStatus(name, False, None, external[name]))
    consumers = ManagedConsumers(settings.state_dir.resolve())
    if consumers.started():  # a row only when `dev up --consumers` started them
        rows.append(ServiceStatus(consumers.name, True, consumers.running(),
                                  consumers.address()))
    return rows
