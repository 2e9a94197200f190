"""deploy/wazuh/custom-secanalyst on its own: integratord's argument conventions, the
options file, retries with backoff on 5xx/429 (Retry-After), no retry on 4xx, and exit
codes; against a tiny local HTTP server."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).parents[2] / "deploy" / "wazuh" / "custom-secanalyst"


def load_script() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("custom_secanalyst", str(SCRIPT))
    spec = importlib.util.spec_from_loader("custom_secanalyst", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class Server:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[dict[str, str], bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.requests.append((dict(self.headers), body))
                status = server.statuses.pop(0) if server.statuses else 202
                self.send_response(status)
                if status == 429:
                    self.send_header("Retry-After", "0")
                self.end_headers()
                self.wfile.write(b'{"accepted": 1}')

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ingest/wazuh"


@pytest.fixture
def server_factory() -> Iterator[Any]:
    started: list[Server] = []

    def make(statuses: list[int]) -> Server:
        server = Server(statuses)
        threading.Thread(target=server.httpd.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.httpd.shutdown()
        server.httpd.server_close()


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    log = tmp_path / "integrations.log"
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], timeout=60, check=False,
                          env={**os.environ, "SECANALYST_INTEGRATION_LOG": str(log)})
    return proc.returncode, log.read_text() if log.exists() else ""


def alert_file(tmp_path: Path) -> str:
    path = tmp_path / "1732761234.alert"
    path.write_text(json.dumps({"id": "1.2", "rule": {"id": "5710", "level": 5}}))
    return str(path)


def test_script_is_executable_and_stdlib_only() -> None:
    assert os.access(SCRIPT, os.X_OK)
    imports = {line.split()[1] for line in SCRIPT.read_text().splitlines()
               if line.startswith(("import ", "from "))}
    assert imports <= {"json", "os", "sys", "time", "urllib.error", "urllib.request"}


def test_posts_the_alert_with_the_key(tmp_path: Path, server_factory: Any) -> None:
    server = server_factory([])
    code, log = run(tmp_path, alert_file(tmp_path), "sak_key", server.url)
    assert code == 0
    headers, body = server.requests[0]
    assert headers["Authorization"] == "Bearer sak_key"
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["id"] == "1.2"
    assert "sak_key" not in log


def test_retries_5xx_and_429_then_succeeds(tmp_path: Path, server_factory: Any) -> None:
    server = server_factory([503, 429])
    options = tmp_path / "x.options"
    options.write_text(json.dumps({"backoff": 0.01}))
    code, log = run(tmp_path, alert_file(tmp_path), "k", server.url, "debug", str(options))
    assert code == 0 and len(server.requests) == 3
    assert "HTTP 503" in log and "HTTP 429" in log and "# Response 202" in log


def test_4xx_is_final_and_retries_are_bounded(tmp_path: Path, server_factory: Any) -> None:
    refused = server_factory([400])
    assert run(tmp_path, alert_file(tmp_path), "k", refused.url)[0] == 8
    assert len(refused.requests) == 1
    failing = server_factory([500] * 10)
    # integratord's positional timeout (argv[6]) and retries (argv[7])
    options = tmp_path / "y.options"
    options.write_text(json.dumps({"backoff": 0.01}))
    code, log = run(tmp_path, alert_file(tmp_path), "k", failing.url, "", str(options), "5",
                    "1")
    assert code == 9 and len(failing.requests) == 2 and "Giving up after 2" in log


def test_bad_arguments_missing_and_invalid_files(tmp_path: Path) -> None:
    assert run(tmp_path, "only-one")[0] == 2
    assert run(tmp_path, str(tmp_path / "gone.alert"), "k", "http://x")[0] == 6
    bad = tmp_path / "bad.alert"
    bad.write_text("{nope")
    assert run(tmp_path, str(bad), "k", "http://x")[0] == 7


def test_settings_from_arguments_and_options(tmp_path: Path) -> None:
    script = load_script()
    options = tmp_path / "a.options"
    options.write_text(json.dumps({"timeout": 3, "retries": 5, "backoff": 2}))
    assert script.settings(["s", "f", "k", "u", "", str(options)]) == {
        "timeout": 3.0, "retries": 5, "backoff": 2.0}
    assert script.settings(["s", "f", "k", "u", "", str(options), "7", "0"]) == {
        "timeout": 7.0, "retries": 0, "backoff": 2.0}
    assert script.settings(["s", "f", "k", "u"]) == {
        "timeout": 10.0, "retries": 3, "backoff": 1.0}
