"""A real worker (`run_worker`, the normalize stage) on the embedded stack answers /livez
at once and /readyz 200 once its consumers have joined their groups."""

from __future__ import annotations

import asyncio
import contextlib

import httpx

from bench.config_errors import closed_port
from pipeline.config import Settings, WorkerSettings
from pipeline.worker import run_worker


async def test_ready_once_the_consumers_joined(settings: Settings) -> None:
    port = closed_port()
    configured = settings.model_copy(update={"worker": WorkerSettings(health_port=port)})
    stop = asyncio.Event()
    worker = asyncio.create_task(run_worker(configured, ["normalize"], stop))
    ready: httpx.Response | None = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     timeout=5) as client:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 120
            while loop.time() < deadline and not worker.done():
                with contextlib.suppress(httpx.TransportError):
                    assert (await client.get("/livez")).status_code == 200
                    ready = await client.get("/readyz")
                    if ready.status_code == 200:
                        break
                await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.wait_for(worker, 60)
    assert ready is not None and ready.status_code == 200, ready and ready.text
    body = ready.json()
    groups = {f"{settings.kafka.group_prefix}-normalize",
              f"{settings.kafka.group_prefix}-normalize-batch"}
    assert set(body["consumers"]) == groups
    assert all(state.startswith("ok: ") for state in body["consumers"].values())
    assert body["database"] == "ok" and body["reasons"] == []
