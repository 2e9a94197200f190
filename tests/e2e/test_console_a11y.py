"""Accessibility: axe-core (the copy bundled by axe-playwright-python) over the queue,
incident, verdict and usage pages in real chromium: no serious or critical violation.
The count is a headline figure, recorded by full runs (`make reliability` sets
SECANALYST_RELIABILITY_FULL=1) like the reliability suite's."""

from __future__ import annotations

import os

import pytest

from tests.e2e.conftest import signed_in_page
from tests.e2e.console_seed import Seeded

pytestmark = [pytest.mark.e2e, pytest.mark.integration]
SERIOUS = ("serious", "critical")


def test_no_serious_axe_violations(chromium_path: str,
                                   console_url: tuple[str, Seeded]) -> None:
    from axe_playwright_python.sync_playwright import Axe

    base, seeded = console_url
    axe = Axe()
    pages = ["/", "/incidents", f"/verdicts/{seeded.ids['acme'][2]}",
             f"/verdicts/{seeded.xss_id}", "/usage", "/runbooks/ssh-brute-force"]
    found: dict[str, list[str]] = {}
    with signed_in_page(chromium_path, base, "analyst@acme.test") as page:
        incident = page.evaluate("fetch('/api/incidents?limit=1').then(r => r.json())")
        pages.append(f"/incidents/{incident[0]['id']}")
        for path in pages:
            page.goto(f"{base}{path}")
            results = axe.run(page).response
            found[path] = [f"{v['id']} ({v['impact']}): {v['help']} — "
                           f"{[n['target'] for n in v['nodes']][:3]}"
                           for v in results["violations"] if v["impact"] in SERIOUS]
    bad = {p: v for p, v in found.items() if v}
    if os.environ.get("SECANALYST_RELIABILITY_FULL") == "1":
        from bench.record import record

        record("console.axe_serious_violations", sum(len(v) for v in found.values()),
               goal="0 serious axe-core violations on the queue, incident, verdict and "
                    "usage pages",
               command="pytest tests/e2e/test_console_a11y.py (SECANALYST_RELIABILITY_FULL=1)")
    assert bad == {}, "\n".join(f"{p}: {x}" for p, v in bad.items() for x in v)
