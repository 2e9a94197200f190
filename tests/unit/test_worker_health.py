"""A worker's /readyz says why it is not ready: consumers not in their group, database
down (a real pool to a closed port, a real FastStream broker not started)."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
from faststream.kafka import KafkaBroker
from psycopg_pool import AsyncConnectionPool

from bench.config_errors import closed_port
from pipeline.sources.writeback import QueueSocket
from pipeline.worker_health import HealthServer, WorkerHealth


async def test_not_ready_names_each_reason() -> None:
    broker = KafkaBroker(f"127.0.0.1:{closed_port()}")

    @broker.subscriber("health-test-topic", group_id="health-test-group")
    async def handle(body: bytes) -> None:  # never runs: the broker is not started
        raise AssertionError(body)

    pool = AsyncConnectionPool(f"postgresql://nobody@127.0.0.1:{closed_port()}/none",
                               min_size=0, max_size=1, open=False)
    await pool.open(wait=False)
    server = HealthServer(WorkerHealth(broker, pool, db_timeout_s=0.5), "127.0.0.1", 0)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            live = await client.get("/livez")
            ready = await client.get("/readyz")
    finally:
        await server.stop()
        await pool.close()
    assert server.port != 0
    assert live.status_code == 200
    assert ready.status_code == 503
    body = ready.json()
    assert body["ready"] is False
    assert body["consumers"] == {"health-test-group": "not started"}
    assert "consumer health-test-group: not started" in body["reasons"]
    assert body["database"].startswith("select 1 failed: ")
    assert any(r.startswith("database: select 1 failed") for r in body["reasons"])


async def test_the_writeback_is_ready_only_while_the_managers_queue_socket_is_there(
        tmp_path: Path) -> None:
    """The write-back's /readyz: no database, its own check of the Wazuh queue socket."""
    path = tmp_path / "queue"
    broker = KafkaBroker(f"127.0.0.1:{closed_port()}")

    @broker.subscriber("writeback-health-topic", group_id="writeback-health-group")
    async def handle(body: bytes) -> None:  # never runs: the broker is not started
        raise AssertionError(body)

    queue = QueueSocket(path)
    server = HealthServer(WorkerHealth(broker, None, checks={"wazuh_queue": queue.readiness}),
                          "127.0.0.1", 0)
    await server.start()
    manager = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            missing = (await client.get("/readyz")).json()
            manager.bind(str(path))  # the manager is up: its socket exists
            present = (await client.get("/readyz")).json()
            metrics = await client.get("/metrics")
    finally:
        manager.close()
        await server.stop()
    assert "database" not in missing
    assert missing["wazuh_queue"].startswith(f"no queue socket at {path}")
    assert any(r.startswith("wazuh_queue: no queue socket") for r in missing["reasons"])
    assert present["wazuh_queue"] == "ok"
    assert present["reasons"] == ["consumer writeback-health-group: not started"]
    assert metrics.status_code == 200
