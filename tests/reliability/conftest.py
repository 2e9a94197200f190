"""The reliability suite (`make reliability`): the real embedded stack, as the integration
tests use it (same session fixtures), driven hard — kills, outages, fuzzing, poison pills.

Each test runs at a CI size by default and at the issue's full size with
`SECANALYST_RELIABILITY_FULL=1` (what `make reliability` sets); the full run writes its
figures to `docs/reliability.md` and `docs/benchmarks.json` (tests/reliability/report.py).
"""

from __future__ import annotations

import os

import pytest

from tests.integration.conftest import db, run_id, session_settings, settings, tenant, worker

__all__ = ["db", "full_size", "run_id", "session_settings", "settings", "tenant", "worker"]

FULL = os.environ.get("SECANALYST_RELIABILITY_FULL") == "1"


def full_size(ci: int, full: int) -> int:
    """How many of something this run uses: `ci` in CI, `full` under `make reliability`."""
    return full if FULL else ci


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/reliability" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            item.add_marker(pytest.mark.reliability)
