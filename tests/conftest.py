"""Shared fixtures: settings for a temporary workspace, a started service, the one in-process `client`
and a real uvicorn server on loopback (helpers live in tests/helpers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from core.settings import Settings
from tests.helpers import LiveServer, fresh_postgres, make_settings, running_app


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
    from core.jobs.service import JobService

    svc = JobService(settings)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """Each engine lorapod supports: None (the SQLite file in the workspace) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with fresh_postgres() as url:
        yield url


@pytest.fixture
def engine(tmp_path: Path, database_url: str | None) -> Iterator[Engine]:
    """A migrated database of each supported engine."""
    from core.db import make_engine, migrate

    engine = make_engine(database_url or f"sqlite:///{tmp_path / 'lorapod.db'}")
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """A real uvicorn server for end-to-end tests."""
    server = LiveServer(settings).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    """An in-process client of the app with its lifespan running."""
    with running_app(settings) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def s3_server() -> Iterator[object]:
    """A real S3-compatible server (moto's server mode) on loopback, shared by the session's bucket tests."""
    from tests.s3server import S3Server

    server = S3Server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    """An HTTP client of the live server (no API key)."""
    with httpx.Client(base_url=live_server.url, timeout=60) as client:
        yield client
