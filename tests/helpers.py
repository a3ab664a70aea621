"""Shared test helpers: settings for a temporary workspace, a real uvicorn server, the app with its lifespan,
an SSE parser and small training parameters."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.jobs.rows import Job, JobStatus, JobType, utcnow
from core.settings import Settings
from core.training.params import TrainParams

# Set by .ci/run, which starts a real PostgreSQL; locally those tests skip unless it is set.
POSTGRES_URL_ENV = "LORAPOD_TEST_POSTGRES_URL"
REPO_ROOT = Path(__file__).resolve().parent.parent
FAKE_TOOLKIT_DIR = REPO_ROOT / "tests" / "fakes" / "ai_toolkit"


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
        """Ask uvicorn to exit (ending open event streams, as SIGTERM does) and wait for it."""
        from app.shutdown import begin_drain

        begin_drain(self.app)
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


@contextmanager
def running_app(settings: Settings) -> Iterator[TestClient]:
    """An in-process client of the app with its lifespan (the job service) running."""
    from app.main import create_app

    with TestClient(create_app(settings)) as client:
        yield client


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Split an event stream into events: {id, event, data (JSON-decoded)}; comments are dropped."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, Any] = {}
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            if key == "data":
                data.append(value)
            else:
                fields[key] = value
        if fields or data:
            fields["data"] = json.loads("\n".join(data)) if data else None
            events.append(fields)
    return events


def train_params(**overrides: object) -> TrainParams:
    """Small, fast training parameters on the test dataset."""
    values: dict[str, object] = {
        "training_name": "faces",
        "base_model": "sd15",
        "steps": 12,
        "save_every": 5,
        "sample_every": 5,
        "sample_prompts": ["a photo of [trigger]"],
        "trigger_word": "sks",
    }
    values.update(overrides)
    return TrainParams.model_validate(values)


def postgres_admin_url() -> str:
    """The test PostgreSQL's URL; skips the test when there is none (fails instead when CI requires one)."""
    url = os.environ.get(POSTGRES_URL_ENV)
    if url:
        return url
    if os.environ.get("LORAPOD_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"{POSTGRES_URL_ENV} is unset but LORAPOD_REQUIRE_POSTGRES=1 (.ci/run starts PostgreSQL)")
    pytest.skip(f"{POSTGRES_URL_ENV} is unset: no PostgreSQL to test against (.ci/run starts one)")


@contextmanager
def fresh_postgres() -> Iterator[str]:
    """A new, empty database on the test PostgreSQL for one test, dropped afterwards; yields its URL."""
    from sqlalchemy import create_engine, text

    from core.db import database_url

    admin_url = database_url(postgres_admin_url())
    name = f"lorapod_t_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield admin_url.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


class WebhookReceiver:
    """A real HTTP server on loopback that records each POST and checks its Standard Webhooks signature.

    `answers` are the status codes it gives, in order (the last one repeats), to exercise retries.
    """

    def __init__(self, secret: str, answers: tuple[int, ...] = (200,)) -> None:
        import http.server

        from standardwebhooks.webhooks import Webhook

        self.verifier = Webhook(secret)
        self.answers = list(answers)
        self.received: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {key.lower(): value for key, value in self.headers.items()}
                try:
                    payload = receiver.verifier.verify(body, headers)
                    verified = True
                except Exception:
                    payload, verified = json.loads(body or b"null"), False
                with receiver._lock:
                    index = len(receiver.received)
                    receiver.received.append(
                        {"path": self.path, "headers": headers, "body": body, "json": payload, "verified": verified}
                    )
                    status = receiver.answers[min(index, len(receiver.answers) - 1)]
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def messages(self) -> list[dict[str, Any]]:
        """What arrived so far."""
        with self._lock:
            return list(self.received)

    def wait_for(self, predicate: Any, timeout: float = 30) -> list[dict[str, Any]]:
        """Wait until predicate(messages) is true; return the messages."""
        deadline = time.monotonic() + timeout
        while not predicate(self.messages()):
            if time.monotonic() > deadline:
                raise AssertionError(f"webhook messages never matched; got {len(self.messages())}")
            time.sleep(0.02)
        return self.messages()


def jobs_in_every_state() -> list[Job]:
    """Jobs as the table holds them in each status: progress, artifacts (one with a key beyond the documented ones),
    errors, a webhook, captioning, resume links, non-ASCII text and floats that JSON encoders write differently."""
    began = utcnow() - timedelta(minutes=5)
    checkpoint = {"name": "café_000000050.safetensors", "kind": "checkpoint", "path": "output/a/c.safetensors"}
    return [
        Job(
            id="train_00000000000a",
            type=JobType.train,
            status=JobStatus.queued,
            name="queued",
            dataset="faces",
            params={"steps": 100, "learning_rate": 1e-05},
            config={"warnings": ["rank lowered to 16"]},
        ),
        Job(
            id="train_00000000000b",
            type=JobType.train,
            status=JobStatus.running,
            name="running",
            gpu="0",
            worker_id="pod-1",
            started_at=began,
            step=40,
            total_steps=100,
            loss=0.123456789,
            rate=1.5,
            eta_seconds=40.0,
            info="Saving model",
            lease_expires_at=began + timedelta(hours=1),
            config={"phase": "training", "captioning": {"model": "tiny", "images": 2, "written": 2}},
        ),
        Job(
            id="train_00000000000c",
            type=JobType.train,
            status=JobStatus.completed,
            name='café ✓ "quoted"',
            started_at=began,
            finished_at=began + timedelta(seconds=90),
            step=100,
            total_steps=100,
            exit_code=0,
            output_dir="output/train_00000000000c",
            log_path="logs/train_00000000000c.log",
            artifacts=[
                {**checkpoint, "size": 19764928, "step": 50, "modified": "2025-01-01T12:02:12+00:00"},
                {"name": "samples/1 a b.jpg", "kind": "sample", "path": "output/a/s.jpg", "size": 1, "sha256": "ab"},
                {"name": "final.safetensors", "kind": "lora", "path": "output/a/f.safetensors", "size": 3},
            ],
        ),
        Job(
            id="gen_00000000000d",
            type=JobType.generate,
            status=JobStatus.failed,
            name="gen",
            exit_code=3,
            error="the worker died\nTraceback: ...",
            finished_at=began,
            webhook={
                "url": "https://example.com/hook",
                "progress": True,
                "state": "failed",
                "attempts": [{"event": "job.failed", "attempt": 1, "status_code": 500}],
            },
        ),
        Job(
            id="cap_00000000000e",
            type=JobType.caption,
            status=JobStatus.cancelled,
            name="cap",
            cancel_requested=True,
            config={"captioning": {"model": "tiny", "images": 3, "written": 1, "skipped": 0, "unreadable": 0}},
        ),
        Job(
            id="train_00000000000f",
            type=JobType.train,
            status=JobStatus.failed,
            name="resumable",
            resumed_from="train_000000000001",
            retried_from="train_000000000002",
            artifacts=[{**checkpoint, "size": 5, "step": 50}, {**checkpoint, "name": "b", "size": 5, "step": 75}],
        ),
    ]
