"""`/livez`, `/readyz` and `/metrics` of a worker process (`secanalyst run`, and the
Wazuh write-back `secanalyst wazuh-writeback`).

Live: the process's event loop answers. Ready: every consumer has joined its group
(partitions assigned, no rebalance in progress, a group coordinator known), the database
answers `select 1` (a worker with a pool) and each of the process's own checks passes
(the write-back: the Wazuh manager's queue socket is there). A 503 body says which part is
not ready and why.
Metrics: prometheus-client's default registry, where the stages' metrics
(pipeline/telemetry_metrics.py) and the router's (pipeline/router/metrics.py) are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from aiohttp import web
from faststream.kafka import KafkaBroker
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from psycopg_pool import AsyncConnectionPool

log = structlog.get_logger(__name__)
OK = "ok"
# A readiness check of its own: OK, or why not.
Check = Callable[[], Awaitable[str]]


def consumer_state(consumer: Any) -> str:
    """"ok: N partitions" or why this aiokafka consumer is not in its group. Reads
    aiokafka's subscription and coordinator state (no public API says "joined")."""
    if consumer is None:
        return "not started"
    subscription = consumer._subscription.subscription
    if subscription is None:
        return "not subscribed"
    if subscription.assignment is None or subscription._reassignment_in_progress:
        return "joining its group (no partitions assigned yet)"
    coordinator = consumer._coordinator
    if coordinator is not None and getattr(coordinator, "coordinator_id", 0) is None:
        return "lost its group coordinator (broker unreachable?)"
    return f"{OK}: {len(subscription.assignment.tps)} partitions"


class WorkerHealth:
    def __init__(self, broker: KafkaBroker, pool: AsyncConnectionPool | None, *,
                 db_timeout_s: float = 2.0, checks: Mapping[str, Check] | None = None,
                 ) -> None:
        self._broker = broker
        self._checks: dict[str, Check] = {} if pool is None else {"database": self.database}
        self._checks.update(checks or {})
        self._pool = pool
        self._db_timeout_s = db_timeout_s

    def consumers(self) -> dict[str, str]:
        return {str(getattr(sub, "group_id", None) or id(sub)): consumer_state(
                    getattr(sub, "consumer", None))
                for sub in self._broker.subscribers}

    async def database(self) -> str:
        if self._pool is None:
            return "no database pool"
        try:
            async with asyncio.timeout(self._db_timeout_s):
                async with self._pool.connection(timeout=self._db_timeout_s) as conn:
                    await conn.execute("select 1")
        except Exception as exc:  # any failure: the stages cannot write
            return f"select 1 failed: {exc!r}"
        return OK

    async def readiness(self) -> dict[str, Any]:
        consumers = self.consumers()
        checked = {name: await check() for name, check in self._checks.items()}
        reasons = [f"consumer {group}: {state}" for group, state in consumers.items()
                   if not state.startswith(OK)]
        if not consumers:
            reasons.append("no consumers registered")
        reasons += [f"{name}: {state}" for name, state in checked.items() if state != OK]
        return {"ready": not reasons, "reasons": reasons, "consumers": consumers, **checked}

    def app(self) -> web.Application:
        async def livez(_: web.Request) -> web.Response:
            return web.json_response({"live": True})

        async def readyz(_: web.Request) -> web.Response:
            body = await self.readiness()
            return web.json_response(body, status=200 if body["ready"] else 503)

        async def metrics(_: web.Request) -> web.Response:
            return web.Response(body=generate_latest(REGISTRY),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        app = web.Application()
        app.router.add_get("/livez", livez)
        app.router.add_get("/readyz", readyz)
        app.router.add_get("/metrics", metrics)
        return app


class HealthServer:
    """The health endpoints on host:port (0: a free port; `port` says which)."""

    def __init__(self, health: WorkerHealth, host: str, port: int) -> None:
        self._runner = web.AppRunner(health.app(), access_log=None)
        self._host = host
        self._requested_port = port
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("worker_health_listening", host=self._host, port=self.port)

    async def stop(self) -> None:
        await self._runner.cleanup()
