"""Incidents in real headless Chromium: a 500-alert storm is one row of the incident
queue; open it, assign it to yourself, start it, resolve it with a note; bulk-resolve
from the queue; "mine" filters. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import psycopg
import pytest

from tests.e2e.conftest import SCREENSHOTS, signed_in_page
from tests.e2e.console_seed import Seeded, insert_storm

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


def test_storm_is_one_incident_assigned_and_resolved(
        chromium_path: str, console_url: tuple[str, Seeded]) -> None:
    from playwright.sync_api import expect

    base, seeded = console_url
    with psycopg.connect(seeded.url) as conn:
        insert_storm(conn, "umbrella", "e2e-storm", 500)
        for n in range(2):
            insert_storm(conn, "umbrella", f"e2e-small-{n}", 3)
    with signed_in_page(chromium_path, base, "analyst@umbrella.test") as page:
        page.click("header nav a[href='/incidents']")
        rows = page.locator("#incidents tbody tr")
        expect(rows).to_have_count(3)  # 506 verdicts, 3 incidents
        storm = rows.filter(has_text="500")
        expect(storm).to_have_count(1)
        expect(storm.locator(".sev")).to_have_text("critical")
        expect(storm).to_contain_text("web-01, web-02, web-03")
        page.screenshot(path=str(SCREENSHOTS / "incidents.png"), full_page=True)

        page.keyboard.press("j")  # the keyboard: first row (the storm, seen last), open
        page.keyboard.press("Enter")
        expect(page.locator("#incident-count")).to_have_text("500")
        page.keyboard.press("a")
        expect(page.locator("#assign-form select")).to_be_focused()
        expect(page.locator("#incident-alerts tbody tr")).to_have_count(200)
        page.select_option("#assign-form select[name=assignee]", "me")
        page.click("#assign-form button[type=submit]")
        expect(page.locator("#incident-assignee")).to_have_text("analyst@umbrella.test")
        page.click("#start-form button[type=submit]")
        expect(page.locator("#incident-status")).to_have_text("in progress")
        page.select_option("#resolve-form select[name=resolution]", "true_positive")
        page.fill("#resolve-form textarea[name=note]", "blocked 198.51.100.7 <b>fw</b>")
        page.click("#resolve-form button[type=submit]")
        expect(page.locator("#incident-status")).to_have_text(
            "resolved — true positive")
        expect(page.locator("#incident-note")).to_have_text(
            "blocked 198.51.100.7 <b>fw</b>")
        expect(page.locator("#audit li")).to_have_count(3)
        page.screenshot(path=str(SCREENSHOTS / "incident.png"), full_page=True)

        page.goto(f"{base}/incidents?assignee=me")
        expect(rows).to_have_count(1)
        page.goto(f"{base}/incidents?status=new")
        expect(rows).to_have_count(2)
        for box in page.locator("#incidents tbody input[type=checkbox]").all():
            box.check()
        page.select_option("#bulk select[name=resolution]", "benign")
        page.fill("#bulk input[name=note]", "two maintenance windows")
        page.click("#bulk-resolve")
        expect(page.locator("#incidents tbody td.empty")).to_be_visible()
        page.goto(f"{base}/incidents?status=resolved")
        expect(rows).to_have_count(3)
        expect(rows.filter(has_text="benign")).to_have_count(2)
