"""Model rollout and rollback: several model versions in one pool, traffic split by weight.

Each replica of a pool serves one model version (its vLLM `--served-model-name`; unset:
the router's `model_name`). A pool's traffic split (version → weight) sends each request
to a version drawn by weight, then to the best replica of that version (the scorers as
usual). Changing the split at run time (`Router.set_traffic_split`) is the rollout step
and the rollback: no restart, requests in flight finish where they are. An empty split
means no versioning: every replica may take any request.

With `sticky` (PoolConfig.sticky_versions) a tenant's requests all draw the same version
(a hash of the tenant id, not a random number), and a tenant moved to the new version
stays there while its share grows: the versions' ranges are laid out in name order, so
growing v2's share only moves tenants from v1 to v2.

If the drawn version has no healthy replica left, the request falls back to the other
versions with a weight > 0 (heaviest first) rather than fail: a broken new version costs
retries, not requests. A version of weight 0 never gets a request.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Mapping
from itertools import accumulate

from pipeline.router.replicas import Pool, Replica


def checked_split(weights: Mapping[str, float]) -> dict[str, float]:
    """The split as given, refused (ValueError) unless every weight is ≥ 0 and one is > 0."""
    split = {str(version): float(weight) for version, weight in weights.items()}
    if any(weight < 0 for weight in split.values()):
        raise ValueError(f"traffic split weights must be >= 0: {split}")
    if split and not any(weight > 0 for weight in split.values()):
        raise ValueError(f"traffic split needs a version with weight > 0: {split}")
    return split


def served_model(replica: Replica, default: str) -> str:
    return replica.model_name or default


def versions_to_try(split: Mapping[str, float], rng: random.Random,
                    sticky_key: str | None = None) -> list[str]:
    """The version drawn by weight (by `sticky_key`'s hash when given), then the other
    weighted ones, heaviest first."""
    live = {version: weight for version, weight in sorted(split.items()) if weight > 0}
    if not live:
        return []
    edges = list(accumulate(live.values()))
    point = (rng.random() if sticky_key is None
             else zlib.crc32(sticky_key.encode()) / 2**32) * edges[-1]
    drawn = next((v for v, edge in zip(live, edges, strict=True) if point < edge),
                 list(live)[-1])
    rest = sorted((v for v in live if v != drawn), key=lambda v: -live[v])
    return [drawn, *rest]


def other_versions(pool: Pool, version: str, default: str) -> set[str]:
    """URLs of the pool's replicas that do not serve `version` (excluded from the pick)."""
    return {r.url for r in pool.replicas if served_model(r, default) != version}
