"""/docs and /redoc in a real headless Chromium with every request to another host refused: they must render the
operations from the packaged assets alone (a locked-down GPU pod has no internet), with LORAPOD_API_KEY set."""

from __future__ import annotations

import re
import shutil
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import LiveServer, make_settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it; apt-get install chromium)"
)


# Chromium's own services (time, updates, accounts) that it calls whatever the page is; anything else the proxy
# sees came from the page, e.g. cdn.jsdelivr.net for FastAPI's stock /docs, or fonts.googleapis.com.
_BROWSER_OWN = re.compile(r"^\S+ (https?://)?([\w-]+\.)*(google\.com|gvt1\.com|(?!fonts\.)[\w-]+\.googleapis\.com)[:/]")


def page_requests(refused: list[str]) -> list[str]:
    """The refused requests that the page made (not Chromium's own background calls)."""
    return [line for line in refused if not _BROWSER_OWN.match(line)]


class _Refusing(socketserver.StreamRequestHandler):
    """A proxy that refuses everything and writes down what was asked of it."""

    def handle(self) -> None:
        line = self.rfile.readline(4096).decode("latin-1").strip()
        self.server.requests.append(line)  # type: ignore[attr-defined]
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


@pytest.fixture
def refusing_proxy() -> Iterator[tuple[str, list[str]]]:
    """The proxy's address and the request lines it refused."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Refusing)
    server.daemon_threads = True
    server.requests = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.requests  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def secured_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A real server with an API key."""
    server = LiveServer(make_settings(tmp_path, api_key="docs-test-key")).start()
    try:
        yield server
    finally:
        server.stop()


def operation_ids(server: LiveServer) -> set[str]:
    """Every operation of the server's document."""
    spec = server.app.openapi()
    ids = {op["operationId"] for item in spec["paths"].values() for op in item.values() if "operationId" in op}
    assert len(ids) > 20
    return ids


def render(url: str, proxy: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, in headless Chromium that reaches only 127.0.0.1 directly."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",  # tests run as root in CI
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        # Every other host goes to the refusing proxy, and no name but loopback resolves: nothing can load
        # from a CDN. Chromium never proxies loopback, so the server itself is reached directly.
        f"--proxy-server={proxy}",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        # Let the page's fetch of /openapi.json and its rendering finish before the DOM is dumped.
        "--virtual-time-budget=20000",
        "--dump-dom",
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_swagger_ui_renders_every_operation_offline(
    secured_server: LiveServer, refusing_proxy: tuple[str, list[str]], tmp_path: Path
) -> None:
    proxy, refused = refusing_proxy
    dom = render(f"{secured_server.url}/docs", proxy, tmp_path / "profile")
    rendered = set(re.findall(r'id="operations-[^"]+-([^"]+)"', dom))
    expected = operation_ids(secured_server)
    assert expected <= rendered, f"not rendered: {sorted(expected - rendered)}; refused: {refused}"
    # The "Authorize" button, for the bearer key (the routes need it: LORAPOD_API_KEY is set here).
    assert re.search(r'class="btn authorize', dom), "no Authorize button"
    assert page_requests(refused) == [], refused


def test_redoc_renders_every_operation_offline(
    secured_server: LiveServer, refusing_proxy: tuple[str, list[str]], tmp_path: Path
) -> None:
    proxy, refused = refusing_proxy
    dom = render(f"{secured_server.url}/redoc", proxy, tmp_path / "profile")
    # ReDoc gives each operation a section "operation/<operationId>".
    rendered = set(re.findall(r'data-section-id="[^"]*operation/([^"]+)"', dom))
    expected = operation_ids(secured_server)
    assert expected <= rendered, f"not rendered: {sorted(expected - rendered)}; refused: {refused}"
    assert page_requests(refused) == [], refused
