"""The serverless worker's cold start: lorapod's start-up runs while the SDK loads, and nothing of it is lost.

bench/bench_cold_start.py measures it; these tests hold what the measurement relies on.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import app.handler
import app.logging_setup
from tests.app.test_handler_worker import worker_environment
from tests.fakes.runpod_platform import FakeRunPodPlatform
from tests.helpers import FAKE_TOOLKIT_DIR, REPO_ROOT, make_settings

# What a cold start must not load before the SDK's import is under way.
HEAVY = ("runpod", "sqlalchemy", "sqlmodel", "pydantic_settings", "core.settings", "core.jobs.service", "torch")


def test_importing_the_handler_loads_neither_lorapod_nor_the_sdk() -> None:
    code = f"import sys, app.handler; print([m for m in {HEAVY!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_start_up_waits_for_the_sdk_then_builds_the_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = tmp_path / "ws"
    monkeypatch.setenv("LORAPOD_WORKSPACE", str(workspace))
    monkeypatch.setenv("AI_TOOLKIT_DIR", str(FAKE_TOOLKIT_DIR))
    monkeypatch.setattr(app.logging_setup, "configure_logging", lambda _settings: None)  # keep pytest's logging
    monkeypatch.delitem(sys.modules, "cpuinfo", raising=False)  # the SDK's import has not reached its wait
    sdk_loaded = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        prepared = pool.submit(app.handler.prepare, sdk_loaded)
        time.sleep(0.3)
        assert not prepared.done() and not workspace.exists()
        sdk_loaded.set()
        service = prepared.result(timeout=60)
    # Checked and migrated, built, but not started: that happens on the SDK's loop at the first job.
    assert (workspace / "lorapod.db").is_file() and service.settings.workspace == workspace
    assert service.started is False


async def test_the_first_job_starts_the_service_built_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prepared = app.handler.build_service(make_settings(tmp_path))
    monkeypatch.setattr(app.handler, "_prepared", prepared)
    monkeypatch.setattr(app.handler, "_service", None)
    monkeypatch.setattr(app.handler, "_service_lock", None)
    try:
        answer = await app.handler.handler({"id": "j-1", "input": {"type": "health"}})
        assert answer["database"]["ok"] is True and answer["worker_id"] == "test-worker"
        assert await app.handler.get_service() is prepared and prepared.started
        assert app.handler._prepared is None
    finally:
        await prepared.close()


def test_a_failed_start_up_check_stops_the_worker_before_it_takes_a_job(tmp_path: Path) -> None:
    platform = FakeRunPodPlatform().start()
    platform.add_job("j-1", {"type": "health"})
    env = worker_environment(tmp_path / "ws", {**platform.worker_env("w"), "LORAPOD_DATABASE_URL": "not a url"})
    try:
        done = subprocess.run(
            [sys.executable, "-m", "app.handler"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        platform.stop()
    assert done.returncode == 1
    assert "LORAPOD_DATABASE_URL" in done.stderr
    assert platform.taken == []
