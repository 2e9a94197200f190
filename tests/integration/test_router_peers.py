"""Router processes sharing the replicas count each other through the Redis that holds
their quotas, and each applies its share of the admission limits (issue 15: the gateway's
replicas and the explain stages, each with a router of its own, hold a replica to the
configured limits together). Real redis-server, routers built as the settings build them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from pipeline.router.admission import Admission
from pipeline.router.build import build_router
from pipeline.router.config import AdmissionConfig, PoolConfig, QuotaBackend, RouterConfig
from pipeline.router.peers import RouterPeers
from pipeline.router.router import Router
from schemas.usage import UsageEvent
from tests.servers import redis_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


class Counter:
    def count_chat(self, messages: list[dict[str, str]]) -> int:
        return 10

    def count_text(self, text: str) -> int:
        return 1


class NoSink:
    def record(self, event: UsageEvent) -> None:
        pass


def router(redis_url: str, prefix: str) -> Router:
    config = RouterConfig(
        model_name="m", pools={"default": PoolConfig(endpoints=["http://127.0.0.1:9/v1"])},
        admission=AdmissionConfig(max_in_flight_per_replica=16, max_queue=64),
        quota=QuotaBackend(redis_url=redis_url, key_prefix=prefix))
    return build_router(config, Counter(), NoSink())  # type: ignore[arg-type]


def share(r: Router) -> tuple[int, int, int]:
    admission: Admission = r._admission
    return admission.routers, admission._per_replica, admission._max_queue


async def test_routers_split_the_limits_between_them_and_take_them_back_as_others_leave(
        redis_url: str) -> None:
    a, b, c = (router(redis_url, "peers-test") for _ in range(3))
    assert a._peers is not None and b._peers is not None and c._peers is not None
    try:
        for r in (a, b, c):
            await r._peers.beat()  # type: ignore[union-attr]
        assert await a._peers.beat() == 3
        assert share(a) == (3, 6, 22)  # 16 / 3 and 64 / 3, rounded up
        assert REGISTRY.get_sample_value("secanalyst_llm_router_peers") == 3
        await c.close()  # a clean stop leaves at once
        assert await a._peers.beat() == 2 and share(a) == (2, 8, 32)
        await b.close()
        assert await a._peers.beat() == 1 and share(a) == (1, 16, 64)
    finally:
        await a.close()


async def test_a_router_that_stopped_beating_is_dropped_after_the_ttl(redis_url: str) -> None:
    """A killed process never leaves: its last heartbeat ages out."""
    now = [1_000.0]
    counts: list[int] = []
    key = "peers-ttl-test:routers"
    killed = RouterPeers(aioredis.Redis.from_url(redis_url), key, counts.append,
                         interval_s=1.0, clock=lambda: now[0])
    alive = RouterPeers(aioredis.Redis.from_url(redis_url), key, counts.append,
                        interval_s=1.0, clock=lambda: now[0])
    try:
        await killed.beat()
        assert await alive.beat() == 2
        now[0] += 2.0  # within the TTL (3 heartbeats): still counted
        assert await alive.beat() == 2
        now[0] += 2.0  # 4 s since its last heartbeat
        assert await alive.beat() == 1
        assert counts == [1, 2, 2, 1]
    finally:
        await killed._client.aclose()
        await alive.close()


async def test_a_starting_router_counts_its_peers_before_its_first_admission(
        redis_url: str) -> None:
    """The first heartbeat is taken before the first request is admitted (Router.complete
    awaits it), so a new pod does not start on all the limits while others route."""
    running, new = router(redis_url, "peers-start-test"), router(redis_url, "peers-start-test")
    try:
        await running._peers.beat()  # type: ignore[union-attr]
        assert share(new) == (1, 16, 64)  # nothing counted yet
        await asyncio.gather(*(new._peers.start() for _ in range(5)))  # type: ignore[union-attr]
        assert share(new) == (2, 8, 32)
        assert new._peers is not None and new._peers._task is not None  # beats go on
    finally:
        await new.close()
        await running.close()


async def test_routers_of_another_fleet_take_no_share(redis_url: str) -> None:
    """Routers counted together are those sending to the same replicas."""
    here, there = router(redis_url, "peers-fleet-test"), router(redis_url, "peers-fleet-test")
    other = build_router(RouterConfig(
        model_name="m", pools={"default": PoolConfig(endpoints=["http://10.9.9.9:8000/v1"])},
        admission=AdmissionConfig(max_in_flight_per_replica=16, max_queue=64),
        quota=QuotaBackend(redis_url=redis_url, key_prefix="peers-fleet-test")),
        Counter(), NoSink())  # type: ignore[arg-type]
    try:
        for r in (here, there, other):
            await r._peers.beat()  # type: ignore[union-attr]
        assert await here._peers.beat() == 2  # type: ignore[union-attr]
        assert await other._peers.beat() == 1  # type: ignore[union-attr]
    finally:
        for r in (here, there, other):
            await r.close()
