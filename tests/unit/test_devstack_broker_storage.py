"""Which services `dev up` starts for the embedded broker, by storage setting and by what
is already running (no process is started here)."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import DevStackSettings, Settings
from pipeline.devstack.kafka import TansuBroker
from pipeline.devstack.private import free_port_run
from pipeline.devstack.seaweedfs import PORTS_USED, SeaweedS3
from pipeline.devstack.stack import embedded_broker


def _settings(tmp_path: Path, storage: str) -> Settings:
    first = free_port_run(PORTS_USED + 1)
    return Settings(state_dir=tmp_path, dev=DevStackSettings.model_validate(
        {"kafka_port": first + PORTS_USED, "seaweedfs_port": first,
         "kafka_storage": storage}))


def test_s3_storage_starts_seaweedfs_first_and_the_broker_uses_it(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "s3")
    storage, broker = embedded_broker(settings)
    assert isinstance(storage, SeaweedS3) and isinstance(broker, TansuBroker)
    assert broker.storage is not None
    assert broker.storage.endpoint() == f"http://127.0.0.1:{settings.dev.seaweedfs_port + 3}"
    assert storage.data == tmp_path.resolve() / "seaweedfs"


def test_memory_storage_is_the_broker_alone(tmp_path: Path) -> None:
    [broker] = embedded_broker(_settings(tmp_path, "memory"))
    assert isinstance(broker, TansuBroker) and broker.storage is None


def test_a_broker_not_running_has_no_storage_to_keep(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "s3")
    assert TansuBroker(tmp_path, settings.dev.kafka_port).running_storage() is None
