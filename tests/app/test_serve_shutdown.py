"""A real `python -m app serve`: SIGTERM with an open event stream, JSON logs, and the trainer adopted after."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.fakes.trainer import make_dataset
from tests.helpers import FAKE_TOOLKIT_DIR, REPO_ROOT, free_port, parse_sse

KEY = "api-key-that-must-never-be-logged"
HF = "hf_token_that_must_never_be_logged"
AUTH = {"Authorization": f"Bearer {KEY}"}


class Served:
    """`python -m app serve` in a subprocess, its stderr collected line by line."""

    def __init__(self, workspace: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("LORAPOD_", "AI_TOOLKIT"))}
        full_env.update(
            LORAPOD_WORKSPACE=str(workspace),
            LORAPOD_GPUS="0",
            LORAPOD_PORT=str(self.port),
            LORAPOD_API_KEY=KEY,
            HF_TOKEN=HF,
            LORAPOD_LOG_FORMAT="json",
            LORAPOD_WORKER_ID="shutdown-test",
            AI_TOOLKIT_DIR=str(FAKE_TOOLKIT_DIR),
            AI_TOOLKIT_PYTHON=sys.executable,
            **env,
        )
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            cwd=REPO_ROOT,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/health/live", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert self.process.poll() is None and time.monotonic() < deadline, self.output()
            time.sleep(0.1)

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    def output(self) -> str:
        """Everything it logged so far."""
        return "\n".join(self.lines)

    def records(self) -> list[dict[str, Any]]:
        """Its log, each line parsed as one JSON object (fails on any line that is not one)."""
        self._reader.join(timeout=10)
        return [json.loads(line) for line in self.lines if line.strip()]

    def wait_for_record(self, predicate: Any, timeout: float = 30) -> dict[str, Any]:
        """The first log record matching predicate, waiting for it to be written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                record = json.loads(line)
                if predicate(record):
                    return record
            time.sleep(0.05)
        raise AssertionError(f"no such log record in:\n{self.output()}")

    def kill(self) -> None:
        """Make sure it is gone (after a failed test)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def test_sigterm_with_an_open_stream_exits_and_the_trainer_is_adopted(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    make_dataset(workspace / "training_data" / "faces", 2)
    # A training long enough to outlive the first server: 400 steps of 0.05 s.
    server = Served(workspace, FAKE_AITK_STEP_SECONDS="0.05", LORAPOD_ACCESS_LOG="1")
    try:
        body = {"type": "train", "training_name": "faces", "base_model": "sd15", "steps": 400, "save_every": 1000}
        job_id = httpx.post(f"{server.url}/jobs", json=body, headers=AUTH, timeout=10).json()["id"]
        received: list[str] = []
        with httpx.stream("GET", f"{server.url}/jobs/{job_id}/events", headers=AUTH, timeout=30) as stream:
            chunks = stream.iter_text()
            # Follow until the trainer reports progress, so the job is surely running.
            while not any("event: progress" in text for text in received):
                received.append(next(chunks))
            server.process.send_signal(signal.SIGTERM)
            sent_at = time.monotonic()
            received.extend(chunks)  # ends when the server closes the stream
        server.process.wait(timeout=10)
        assert time.monotonic() - sent_at < 10
    finally:
        server.kill()

    events = parse_sse("".join(received))
    assert events[-1]["event"] == "shutdown", events[-3:]
    assert events[-1]["data"]["id"] == job_id and events[-1]["data"]["status"] == "running"
    assert "reconnect" in events[-1]["data"]["reason"]

    records = server.records()  # every line is a JSON object
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys(), record
    messages = [r["message"] for r in records]
    assert "job service closed" in messages  # the lifespan shutdown ran: the service closed
    started = next(r for r in records if r["message"].startswith(f"job {job_id} started"))
    assert started["job_id"] == job_id and started["logger"] == "lorapod.jobs"
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    assert any(r["method"] == "POST" and r["path"] == "/jobs" and r["status"] == 202 for r in access), access
    assert not any(KEY in line or HF in line for line in server.lines)

    # The trainer kept running in its own process group; the next start adopts it.
    second = Served(workspace)
    try:
        adopted = second.wait_for_record(lambda r: r["message"].startswith("adopted the running trainer"))
        assert adopted["job_id"] == job_id and adopted["level"] == "INFO"
        assert httpx.get(f"{second.url}/jobs/{job_id}", headers=AUTH).json()["status"] == "running"
        assert httpx.post(f"{second.url}/jobs/{job_id}/cancel", headers=AUTH, timeout=10).status_code == 202
        deadline = time.monotonic() + 30
        while httpx.get(f"{second.url}/jobs/{job_id}", headers=AUTH).json()["status"] != "cancelled":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        second.process.send_signal(signal.SIGTERM)
        second.process.wait(timeout=10)
        # Without LORAPOD_ACCESS_LOG the requests above wrote no access lines.
        assert not [r for r in second.records() if r["logger"] == "uvicorn.access"]
    finally:
        second.kill()
    assert not any(KEY in line or HF in line for line in second.lines)
    assert all(json.loads(line) for line in second.lines if line.strip())
