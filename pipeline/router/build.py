"""A router from its configuration (config.py): quota store, admission and picker as
configured. The caller brings what configuration cannot: a token counter and a sink."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import redis.asyncio as aioredis

from pipeline.router.admission import Admission
from pipeline.router.config import RouterConfig
from pipeline.router.discovery import Discovery
from pipeline.router.metrics import set_router_peers
from pipeline.router.peers import RouterPeers
from pipeline.router.quota import quota_store_for
from pipeline.router.router import Router
from pipeline.router.scoring import build_picker
from pipeline.router.tokens import TokenCounter
from pipeline.router.usage import UsageSink


def build_router(config: RouterConfig, counter: TokenCounter, usage: UsageSink, *,
                 discovery: Mapping[str, Discovery] | None = None) -> Router:
    admission, scoring = config.admission, config.scoring
    # Every configured URL is scraped from the start; discovered replicas join later.
    urls = [url for pool in config.pools.values() for url in pool.endpoints]
    admit = Admission(
        max_in_flight_per_replica=admission.max_in_flight_per_replica,
        max_queue=admission.max_queue, max_wait_s=admission.max_wait_s,
        max_prefill_tokens_per_replica=admission.max_prefill_tokens_per_replica)
    return Router(
        model_name=config.model_name, pools=config.pools, counter=counter, usage=usage,
        connect_timeout_s=config.connect_timeout_s,
        request_timeout_s=config.request_timeout_s,
        quota=quota_store_for(config.quota), tenants=config.tenants,
        admission=admit,
        picker=build_picker(scoring.weights, urls, params=scoring.params,
                            affinity=scoring.affinity, scrape=scoring.scrape),
        discovery=discovery, peers=_peers(config, admit))


def _peers(config: RouterConfig, admission: Admission) -> RouterPeers | None:
    """With quotas in Redis, the router processes count each other there and each takes
    its share of the admission limits (peers.py); alone (memory quotas), all of them."""
    if not (config.quota.redis_url and config.admission.split_between_routers):
        return None

    def share(routers: int) -> None:
        admission.set_share(routers)
        set_router_peers(routers)

    return RouterPeers(aioredis.Redis.from_url(config.quota.redis_url), peers_key(config),
                       share, interval_s=config.admission.peers_heartbeat_s)


def peers_key(config: RouterConfig) -> str:
    """One set per fleet of replicas: routers sending to other pools (another model, a
    staging fleet on the same Redis) take no share of these ones' limits."""
    endpoints = sorted(url for pool in config.pools.values() for url in pool.endpoints)
    fleet = hashlib.sha256("\n".join(endpoints).encode()).hexdigest()[:16]
    return f"{config.quota.key_prefix}:routers:{fleet}"
