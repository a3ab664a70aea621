"""Shared fixtures: a temporary workspace, settings pointing at the stand-in ai-toolkit, a started
service, an in-process client and a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.settings import Settings

FAKE_TOOLKIT_DIR = Path(__file__).resolve().parent / "fakes" / "ai_toolkit"


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings for a test: its own workspace and database, the stand-in trainer, fast timings."""
    values: dict[str, object] = {
        "workspace": tmp_path / "workspace",
        "ai_toolkit_dir": FAKE_TOOLKIT_DIR,
        "ai_toolkit_python": sys.executable,
        "gpus": "0",
        "stop_grace_seconds": 5.0,
        "progress_interval_seconds": 0.1,
        "generation_idle_seconds": 60.0,
        "worker_id": "test-worker",
    }
    values.update(overrides)
    return Settings.model_validate(values)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Never let a developer's real tokens or ai-toolkit UI job id reach the tests' subprocesses.
    for name in ("HF_TOKEN", "LORAPOD_API_KEY", "AITK_JOB_ID", "LORAPOD_GPUS", "LORAPOD_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.01")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings for one test."""
    return make_settings(tmp_path)


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[object]:
    """A started JobService on the test's event loop."""
    from core.jobs import JobService

    svc = JobService(settings)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.close()


class LiveServer:
    """A real uvicorn server on a loopback port, running the app in a background thread."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from app.main import create_app

        self.settings = settings
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        asyncio.run(self.server.serve())

    def start(self) -> LiveServer:
        """Start and wait until it accepts connections."""
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for it."""
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def service(self):  # type: ignore[no-untyped-def]
        """The running app's job service."""
        return self.app.state.service


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """A real uvicorn server for end-to-end tests."""
    server = LiveServer(settings).start()
    try:
        yield server
    finally:
        server.stop()
