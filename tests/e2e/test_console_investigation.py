"""The verdict page as an investigation tool, in real headless Chromium: the rule as the
title, entity pivots to the filtered queue, ATT&CK and runbook links, the original alert
escaped one click away, and /api/docs rendered from the console's own Swagger UI under
its CSP. Full-page screenshots go to docs/screenshots/ (the README shows them)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import SCREENSHOTS, signed_in_page
from tests.e2e.console_seed import Seeded

pytestmark = [pytest.mark.e2e, pytest.mark.integration]


@pytest.fixture()
def analyst_page(chromium_path: str, console_url: tuple[str, Seeded]) -> Iterator[Any]:
    with signed_in_page(chromium_path, console_url[0], "analyst@acme.test") as page:
        yield page


def test_verdict_page_pivots_links_and_original_alert(
        analyst_page: Any, console_url: tuple[str, Seeded]) -> None:
    from playwright.sync_api import expect

    base, seeded = console_url
    page = analyst_page
    page.goto(f"{base}/verdicts/{seeded.ids['acme'][1]}")  # acme-6: from 10.0.0.2, root
    assert page.title().startswith("sshd: Attempt to login using a non-existent user")
    expect(page.locator("#fact-dst")).to_contain_text("10.1.0.5 port 22")
    expect(page.locator("#attack a.attack-link")).to_have_attribute(
        "href", "https://attack.mitre.org/techniques/T1110/")
    expect(page.locator("#attack")).to_contain_text("Credential Access")
    expect(page.locator("#wazuh-link")).to_have_attribute(
        "href", "https://wazuh.example/app/threat-hunting#/overview/?_q=id:acme-6")
    page.locator("#original-details summary").click()
    expect(page.locator("#original-alert")).to_contain_text('"description": "sshd acme 6"')
    page.screenshot(path=str(SCREENSHOTS / "verdict.png"), full_page=True)

    page.locator("#fact-src a.pivot").click()  # everything from this source address
    expect(page.locator("input[name=src_ip]")).to_have_value("10.0.0.2")
    rows = page.locator("#queue tbody tr")
    expect(rows).to_have_count(4)  # acme-0, 2, 4, 6; never globex's from the same IP
    assert all(f"acme sshd brute force attempt number {n}" in text
               for n, text in zip((6, 4, 2, 0), rows.all_inner_texts(), strict=True))
    page.screenshot(path=str(SCREENSHOTS / "queue-pivot-src-ip.png"), full_page=True)

    page.go_back()
    page.locator("details.passage summary").first.click()
    page.locator("a.runbook-link").first.click()
    expect(page.locator("#runbook h1")).to_have_text("SSH brute force against Linux hosts")
    expect(page.locator("#runbook h2#containment-and-response")).to_be_visible()
    assert page.url.endswith("/runbooks/ssh-brute-force#containment-and-response")
    page.screenshot(path=str(SCREENSHOTS / "runbook.png"), full_page=True)


def test_original_alert_with_script_renders_as_text(
        analyst_page: Any, console_url: tuple[str, Seeded]) -> None:
    from playwright.sync_api import expect

    base, seeded = console_url
    page = analyst_page
    page.goto(f"{base}/verdicts/{seeded.xss_id}")
    page.locator("#original-details summary").click()
    expect(page.locator("#original-alert")).to_contain_text(
        '"url": "/<script>alert(1)</script>"')
    assert page.locator("main script, main img, main iframe").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "verdict-hostile-alert.png"), full_page=True)


def test_api_docs_render_operations_offline(
        analyst_page: Any, console_url: tuple[str, Seeded]) -> None:
    from playwright.sync_api import expect

    base, _ = console_url
    page = analyst_page
    outside: list[str] = []  # any request off the console's own origin fails the test
    page.on("request", lambda r: outside.append(r.url)
            if not r.url.startswith(base) and not r.url.startswith("data:") else None)
    page.goto(f"{base}/api/docs")
    expect(page.locator(".opblock").first).to_be_visible(timeout=15_000)
    expect(page.locator(".opblock-summary-path", has_text="/api/verdicts").first
           ).to_be_visible()
    assert page.locator(".opblock").count() >= 5
    assert outside == []
    page.screenshot(path=str(SCREENSHOTS / "api-docs.png"), full_page=True)


def test_analyst_sees_own_usage_only(analyst_page: Any) -> None:
    from playwright.sync_api import expect

    page = analyst_page  # acme's analyst
    page.click("header nav a[href='/usage']")
    expect(page.locator("#charts svg.chart")).to_have_count(6)
    tenants = page.locator("#usage-table tbody tr td:nth-child(2)").all_inner_texts()
    assert tenants and set(tenants) == {"acme"}  # never globex's rows
    assert page.locator("header nav a[href='/audit']").count() == 0
    page.screenshot(path=str(SCREENSHOTS / "usage-analyst.png"), full_page=True)


def test_related_alerts_timeline_links_to_each_verdict(
        analyst_page: Any, console_url: tuple[str, Seeded]) -> None:
    from playwright.sync_api import expect

    base, seeded = console_url
    page = analyst_page
    acme = seeded.ids["acme"]  # newest first: the hostile one, then acme-6 … acme-0
    page.goto(f"{base}/verdicts/{acme[2]}")  # acme-5: db-01, 10.0.0.1, user admin
    events = page.locator("#related svg a.event")
    expect(events).to_have_count(6)  # agent: 4, 6; source and user: 1, 3
    hrefs = sorted(events.evaluate_all("es => es.map(e => e.getAttribute('href'))"))
    number = {n: acme[7 - n] for n in range(7)}  # acme-n's verdict id
    assert hrefs == sorted(f"/verdicts/{number[n]}" for n in (4, 6, 1, 3, 1, 3))
    page.screenshot(path=str(SCREENSHOTS / "verdict-related-timeline.png"), full_page=True)
    events.first.click()
    expect(page.locator("#verdict-title")).to_be_visible()
    assert page.url.rsplit("/", 1)[1] in {str(number[n]) for n in (1, 3, 4, 6)}
