"""What every test run shares: under `make test` (SECANALYST_NO_SKIPS=1) a skipped test
is a failure. The README promises that `make test` runs every test; a skip is how a
missing tool, data set or service would otherwise pass unnoticed. `make test` installs the
tools first (scripts/install-test-deps.sh) and stops at once when it cannot; a test run by
hand (`pytest tests/unit/…`) may still skip, saying what is missing."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

NO_SKIPS = os.environ.get("SECANALYST_NO_SKIPS") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if NO_SKIPS and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (f"skipped, but make test runs every test (SECANALYST_NO_SKIPS=1): "
                           f"{reason}")
