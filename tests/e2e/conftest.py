"""The browser tests' console: one seeded PostgreSQL and one uvicorn server for the whole
session (both test files), and Debian's chromium."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from pipeline.web.console.app import create_console_app
from tests.e2e.console_seed import PASSWORD, Seeded, console_database
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
SCREENSHOTS = ROOT / "docs" / "screenshots"  # referenced from the README
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    found = shutil.which("chromium")
    if found is None:
        pytest.skip("no `chromium` on PATH: .ci/run installs it (apt-get install chromium)")
    return found


@pytest.fixture(scope="session")
def console_url() -> Iterator[tuple[str, Seeded]]:
    with console_database(page_size=50) as seeded:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_console_app(seeded.settings),
                                               host="127.0.0.1", port=port,
                                               log_config=None, access_log=False))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        try:
            yield base, seeded
        finally:
            server.should_exit = True
            thread.join(timeout=10)


@contextmanager
def signed_in_page(chromium_path: str, base: str, email: str) -> Iterator[Any]:
    """A chromium page signed in as `email`; fails on any Content-Security-Policy
    violation the console's pages cause."""
    from playwright.sync_api import sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            blocked: list[str] = []
            page.on("console", lambda m: blocked.append(m.text)
                    if "Content Security Policy" in m.text else None)
            page.goto(f"{base}/login")
            page.fill("input[name=email]", email)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/")
            yield page
            assert blocked == []
        finally:
            browser.close()
