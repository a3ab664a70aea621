"""Readiness: generation needs an environment that imports torch and diffusers; liveness and readiness probes."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.shutdown import begin_drain
from core.errors import Unavailable
from core.readiness import GenerationProbe
from tests.helpers import LiveServer, make_settings

GENERATE = {"type": "generate", "prompt": "a photo of sks person", "base_model": "sd15"}


def settled_health(url: str, timeout: float = 180) -> dict[str, Any]:
    """/health once the generation check has answered (it runs in the background from start-up)."""
    deadline = time.monotonic() + timeout
    while True:
        health = httpx.get(f"{url}/health", timeout=10).json()
        if health["generation"]["status"] != "checking":
            return health
        assert time.monotonic() < deadline, health
        time.sleep(0.1)


@pytest.fixture
def bare_python(tmp_path: Path) -> str:
    """A real Python environment without torch or diffusers: a fresh venv (no pip, no site packages)."""
    venv = tmp_path / "bare-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    return str(venv / "bin" / "python")


def test_generation_is_refused_up_front_without_diffusers(tmp_path: Path, bare_python: str) -> None:
    server = LiveServer(make_settings(tmp_path, ai_toolkit_python=bare_python)).start()
    try:
        health = settled_health(server.url)
        generation = health["generation"]
        assert generation["status"] == "unavailable" and generation["ready"] is False
        assert generation["python"] == bare_python
        assert "cannot import torch: ModuleNotFoundError" in generation["reason"]
        assert health["status"] == "degraded"

        response = httpx.post(f"{server.url}/jobs", json=GENERATE, timeout=10)
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert "generation is unavailable" in error and bare_python in error and "torch" in error
        assert httpx.get(f"{server.url}/jobs").json()["data"] == []  # nothing was queued

        # The RunPod-style contract refuses it the same way (no type but a prompt means generate).
        call = httpx.post(f"{server.url}/v2/pod/runsync", json={"input": {"prompt": "x"}}, timeout=30).json()
        assert call["status"] == "FAILED" and "generation is unavailable" in call["error"]

        # Trainings do not need it: the pod stays ready, and says what it can run.
        ready = httpx.get(f"{server.url}/health/ready").json()
        assert ready["status"] == "ready" and ready["checks"]["generation"] is False
        assert ready["checks"]["training"] is True
        assert "lorapod_generation_ready 0.0" in httpx.get(f"{server.url}/metrics").text
    finally:
        server.stop()


def test_generation_is_ready_in_a_working_environment(live_server: LiveServer) -> None:
    # The test environment has torch and diffusers (the dev extras), as ai-toolkit's venv does.
    health = settled_health(live_server.url)
    assert health["generation"]["status"] == "ready", health["generation"]
    assert health["generation"]["reason"] is None and health["status"] == "ok"
    assert "lorapod_generation_ready 1.0" in httpx.get(f"{live_server.url}/metrics").text


def test_a_missing_interpreter_is_unavailable_with_the_reason(tmp_path: Path) -> None:
    probe = GenerationProbe(str(tmp_path / "no" / "python"))
    assert probe.ready is None and probe.report()["status"] == "checking"
    probe.start()
    assert probe.wait(timeout=30) is False
    assert "could not run it: FileNotFoundError" in str(probe.report()["reason"])
    with pytest.raises(Unavailable) as caught:
        probe.require()
    assert caught.value.status_code == 503 and str(tmp_path / "no" / "python") in str(caught.value)


def test_probes_are_open_and_readiness_drops_when_shutting_down(tmp_path: Path) -> None:
    server = LiveServer(make_settings(tmp_path, api_key="probe-key")).start()
    try:
        assert httpx.get(f"{server.url}/metrics").status_code == 401  # the key is on
        live = httpx.get(f"{server.url}/health/live")
        assert live.status_code == 200 and live.json() == {"status": "alive"}
        ready = httpx.get(f"{server.url}/health/ready")
        assert ready.status_code == 200 and ready.json()["checks"]["database"] is True
        begin_drain(server.app)  # what SIGTERM does first
        deadline = time.monotonic() + 10
        while (ready := httpx.get(f"{server.url}/health/ready")).status_code == 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert ready.status_code == 503 and ready.json()["error"] == "shutting down"
        assert httpx.get(f"{server.url}/health/live").status_code == 200  # still alive while it drains
    finally:
        server.stop()
