"""Bearer auth on and off, /health, and the `python -m app` command line (metrics: test_metrics.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect

from app.cli import choose_host
from app.main import create_app
from core.db import make_engine
from core.settings import Settings
from tests.helpers import free_port, make_settings

KEY = "s3cret-key-for-tests"
PROTECTED = [
    ("GET", "/jobs"),
    ("POST", "/jobs"),
    ("GET", "/jobs/train_000000000000"),
    ("GET", "/jobs/train_000000000000/events"),
    ("GET", "/datasets"),
    ("POST", "/datasets/x/files"),
    ("GET", "/models"),
    ("GET", "/files"),
    ("GET", "/files/logs/x.log"),
    ("GET", "/metrics"),
]
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One key-protected app for the whole module (these tests only read)."""
    with TestClient(create_app(make_settings(tmp_path_factory.mktemp("secured"), api_key=KEY))) as client:
        yield client


@pytest.fixture
def open_client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("header", [None, "Bearer wrong-key", f"Basic {KEY}", "Bearer ", f"Bearer {KEY}x"])
def test_protected_routes_need_the_key(secured: TestClient, method: str, path: str, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    response = secured.request(method, path, headers=headers)
    assert response.status_code == 401
    assert response.json() == {"error": "missing or invalid bearer token"}
    assert response.headers["www-authenticate"] == "Bearer"
    assert KEY not in response.text


def test_right_key_opens_every_route_and_health_stays_open(secured: TestClient) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    assert secured.get("/health").status_code == 200  # no token needed
    for path in ["/jobs", "/datasets", "/models", "/files", "/metrics"]:
        assert secured.get(path, headers=auth).status_code == 200, path
    assert secured.get("/jobs/train_000000000000", headers=auth).status_code == 404  # past auth, then not found


def test_without_a_key_everything_is_open(open_client: TestClient) -> None:
    for path in ["/jobs", "/datasets", "/models", "/files", "/metrics", "/health"]:
        assert open_client.get(path).status_code == 200, path


def test_key_is_never_echoed(secured: TestClient) -> None:
    health = secured.get("/health").text
    docs = secured.get("/openapi.json").text
    assert KEY not in health and KEY not in docs


def test_health_reports_details(open_client: TestClient, settings: Settings) -> None:
    health = open_client.get("/health").json()
    assert health["status"] == "ok"  # the database answers and the stand-in run.py is found
    assert health["ai_toolkit"]["found"] is True
    assert health["ai_toolkit"]["dir"] == str(settings.ai_toolkit_dir)
    assert health["database"]["ok"] is True
    assert health["queue_depth"] == 0
    assert health["disk"]["free_bytes"] > 0
    assert [slot["gpu"] for slot in health["slots"]] == ["0"]
    assert health["version"]


def test_health_is_degraded_without_ai_toolkit(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, ai_toolkit_dir=None))) as client:
        response = client.get("/health")
        assert response.status_code == 200 and response.json()["status"] == "degraded"
        assert response.json()["ai_toolkit"]["found"] is False


# ----- the command line


def test_choose_host_keeps_loopback_without_a_key(tmp_path: Path) -> None:
    open_settings = make_settings(tmp_path, host="0.0.0.0")
    host, note = choose_host(open_settings, None)
    assert host == "127.0.0.1" and note and "LORAPOD_API_KEY is not set" in note and "0.0.0.0" in note
    host, note = choose_host(open_settings, "0.0.0.0")
    assert host == "0.0.0.0" and note and "open to anyone" in note
    host, note = choose_host(make_settings(tmp_path, host="0.0.0.0", api_key=KEY), None)
    assert (host, note) == ("0.0.0.0", None)
    host, note = choose_host(make_settings(tmp_path, api_key=KEY), "10.0.0.5")
    assert (host, note) == ("10.0.0.5", None)


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORAPOD_", "AI_TOOLKIT"))}
    env.update(LORAPOD_WORKSPACE=str(tmp_path / "ws"), LORAPOD_GPUS="0", **extra)
    return env


def test_migrate_creates_the_jobs_table(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "migrate"],
        cwd=REPO_ROOT,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    engine = make_engine(f"sqlite:///{tmp_path / 'ws' / 'lorapod.db'}")
    assert "jobs" in inspect(engine).get_table_names()
    engine.dispose()


def test_serve_without_key_binds_loopback_and_says_so(tmp_path: Path) -> None:
    port = free_port()
    env = cli_env(tmp_path, LORAPOD_HOST="0.0.0.0", LORAPOD_PORT=str(port))
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve", "--log-level", "warning"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert response.status_code == 200
        bound = _listening_addresses(port)
        assert bound == {"127.0.0.1"}, bound
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "LORAPOD_API_KEY is not set" in output and "127.0.0.1 only" in output
    # Said once, by the command line: the app's own warning is for `uvicorn app.main:app` users.
    assert output.count("LORAPOD_API_KEY is not set") == 1, output


def _listening_addresses(port: int) -> set[str]:
    # /proc/net/tcp lists listening sockets (state 0A) as hex IP:port, little-endian IP.
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        ip_hex, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(ip_hex)[::-1]))
    return found
