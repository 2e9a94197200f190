"""The review console in real headless Chromium (Debian `chromium`, driven by Python
playwright; never `playwright install`): sign in, filter the queue, open a verdict,
correct its severity, see the change and its audit entry; the usage page's charts.
A screenshot of each page goes to test-artifacts/."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from tests.e2e.conftest import ARTIFACTS, CHROMIUM_ARGS
from tests.e2e.console_seed import PASSWORD, Seeded, insert_verdict

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_analyst_corrects_a_severity_and_admin_sees_usage(
        chromium_path: str, console_url: tuple[str, Seeded]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, seeded = console_url
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{base}/login")
            page.fill("input[name=email]", "admin@acme.test")
            page.fill("input[name=password]", PASSWORD)
            page.screenshot(path=str(ARTIFACTS / "console-login.png"))
            page.click("button[type=submit]")
            expect(page.locator("#queue")).to_be_visible()
            expect(page.locator("#queue tbody tr")).to_have_count(8)
            page.screenshot(path=str(ARTIFACTS / "console-queue.png"), full_page=True)

            page.select_option("select[name=severity]", "critical")
            page.click("#filters button[type=submit]")
            expect(page.locator("#queue tbody tr")).to_have_count(1)
            page.screenshot(path=str(ARTIFACTS / "console-queue-filtered.png"))
            page.click("#queue tbody tr a")

            expect(page.locator("#severity")).to_have_text("critical")
            page.locator("#raw-alert").evaluate("e => e.parentElement.open = true")
            page.screenshot(path=str(ARTIFACTS / "console-verdict.png"), full_page=True)
            page.select_option("#severity-form select[name=severity]", "low")
            page.click("#severity-form button[type=submit]")
            expect(page.locator("#severity")).to_have_text("low")
            expect(page.locator("#severity-source")).to_have_text("analyst")
            expect(page.locator("#analyst-status")).to_have_text("corrected")
            expect(page.locator("#history tbody")).to_contain_text("admin@acme.test")
            expect(page.locator("#audit")).to_contain_text("verdict.severity")
            page.screenshot(path=str(ARTIFACTS / "console-verdict-corrected.png"),
                            full_page=True)

            page.goto(f"{base}/verdicts/{seeded.xss_id}")
            expect(page.locator("#summary")).to_contain_text('<script>alert("xss")</script>')
            assert page.locator("main script, main img, main iframe").count() == 0

            page.goto(f"{base}/audit")
            expect(page.locator("#audit-log")).to_contain_text("verdict.severity")
            page.screenshot(path=str(ARTIFACTS / "console-audit.png"), full_page=True)

            page.goto(f"{base}/")  # live updates: a new verdict arrives while we look
            expect(page.locator("#live")).to_be_hidden()
            with psycopg.connect(seeded.url) as conn:
                insert_verdict(conn, "acme", 500, severity="high", rule="5710",
                               agent="web-01", summary="a fresh verdict",
                               created=datetime.now(UTC), attack=[], alert={})
            expect(page.locator("#live")).to_be_visible(timeout=15_000)
            page.click("#live a")
            expect(page.locator("#queue tbody tr").first).to_contain_text("a fresh verdict")

            page.goto(f"{base}/usage")
            expect(page.locator("#charts svg.chart")).to_have_count(6)
            assert page.locator("#charts rect.bar").count() > 0
            assert page.locator("#charts polyline.series").count() == 2
            page.screenshot(path=str(ARTIFACTS / "console-usage.png"), full_page=True)
        finally:
            browser.close()
