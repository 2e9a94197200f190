"""A worker's /readyz says why it is not ready: consumers not in their group, database
down (a real pool to a closed port, a real FastStream broker not started)."""

from __future__ import annotations

import httpx
from faststream.kafka import KafkaBroker
from psycopg_pool import AsyncConnectionPool

from bench.config_errors import closed_port
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
