"""A small loopback stand-in for the RunPod platform URLs a serverless worker talks to.

It serves what runpod-python 1.12's worker loop calls (see docs/reference/runpod.md §4.1):

- `GET /job-take/<worker>?...&job_in_progress=0|1`: hands out the next queued job `{"id", "input"}`, or 204
  after a short long-poll;
- `GET /job-stop/<worker>?...`: `{"jobsToStop": [...]}` once for each requested stop, or 204;
- `POST /job-done/<worker>/<job>?...&isStream=...`: records the body (progress updates carry
  `"status": "IN_PROGRESS"`, the final result does not);
- `POST /job-stream/<worker>/<job>?...`: records streamed chunks;
- `GET /ping/<worker>?job_id=...&runpod_version=...`: records heartbeats.

Bodies arrive as JSON text labelled `application/x-www-form-urlencoded`, as the SDK sends them.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# How long job-take and job-stop hold a request open when there is nothing to hand out.
LONG_POLL_SECONDS = 0.5


@dataclass
class Posted:
    """One body the worker POSTed for a job."""

    job_id: str
    kind: str  # "done" or "stream"
    body: Any
    is_stream: bool
    authorization: str | None
    at: float = field(default_factory=time.monotonic)

    @property
    def is_progress(self) -> bool:
        """A progress_update post (job-done with status IN_PROGRESS), not the result."""
        return self.kind == "done" and isinstance(self.body, dict) and self.body.get("status") == "IN_PROGRESS"


class FakeRunPodPlatform:
    """The platform's job queue, stop channel, result sink and heartbeat receiver, on 127.0.0.1."""

    def __init__(self, api_key: str = "platform-key") -> None:
        self.api_key = api_key
        self._jobs: deque[dict[str, Any]] = deque()
        self._stops: deque[str] = deque()
        self._changed = threading.Condition()
        self.posts: list[Posted] = []
        self.pings: list[dict[str, list[str]]] = []
        self.taken: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # ----- life

    @property
    def url(self) -> str:
        """Base URL of the stand-in."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeRunPodPlatform:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def worker_env(self, worker_id: str) -> dict[str, str]:
        """The environment variables that point a worker at this stand-in, as the platform sets them."""
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.url}/job-take/$ID?gpu=test",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.url}/job-done/$RUNPOD_POD_ID/$ID?gpu=test",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{self.url}/job-stream/$RUNPOD_POD_ID/$ID?gpu=test",
            "RUNPOD_WEBHOOK_PING": f"{self.url}/ping/$RUNPOD_POD_ID",
            "RUNPOD_PING_INTERVAL": "1000",
            "RUNPOD_POD_ID": worker_id,
            "RUNPOD_AI_API_KEY": self.api_key,
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_SKIP_GPU_CHECK": "true",
        }

    # ----- driving it

    def add_job(self, job_id: str, job_input: Any) -> None:
        """Queue a request for the worker to take."""
        with self._changed:
            self._jobs.append({"id": job_id, "input": job_input})
            self._changed.notify_all()

    def stop_job(self, job_id: str) -> None:
        """Signal the worker to stop a job (what a cancel or a timeout does on the platform)."""
        with self._changed:
            self._stops.append(job_id)
            self._changed.notify_all()

    def posted(self, job_id: str) -> list[Posted]:
        """Everything POSTed for a job so far, in order."""
        with self._changed:
            return [p for p in self.posts if p.job_id == job_id]

    def result(self, job_id: str) -> Posted | None:
        """The job's final job-done post, if it came."""
        return next((p for p in self.posted(job_id) if p.kind == "done" and not p.is_progress), None)

    def wait_until(self, condition: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll condition until it is truthy; fail with what after timeout seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)

    # ----- serving

    def _next(self, queue: deque[Any]) -> Any:
        with self._changed:
            if not queue:
                self._changed.wait(LONG_POLL_SECONDS)
            return queue.popleft() if queue else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output quiet

            def _reply(self, status: int, body: Any = None) -> None:
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                if body is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                # A worker stopped while its long-poll was open has nobody left to read the answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path.startswith("/job-take/"):
                    job = platform._next(platform._jobs)
                    if job is None:
                        self._reply(204)
                        return
                    platform.taken.append(job["id"])
                    self._reply(200, job)
                elif parts.path.startswith("/job-stop/"):
                    job_id = platform._next(platform._stops)
                    if job_id is None:
                        self._reply(204)
                    else:
                        self._reply(200, {"jobsToStop": [job_id]})
                elif parts.path.startswith("/ping/"):
                    with platform._changed:
                        platform.pings.append(parse_qs(parts.query))
                    self._reply(200, {})
                else:
                    self._reply(404, {"error": "unknown path"})

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                segments = parts.path.strip("/").split("/")
                if segments[0] not in ("job-done", "job-stream") or len(segments) != 3:
                    self._reply(404, {"error": "unknown path"})
                    return
                query = parse_qs(parts.query)
                posted = Posted(
                    job_id=segments[2],
                    kind="done" if segments[0] == "job-done" else "stream",
                    body=json.loads(raw) if raw else None,
                    is_stream=query.get("isStream", ["false"])[0] == "true",
                    authorization=self.headers.get("Authorization"),
                )
                with platform._changed:
                    platform.posts.append(posted)
                self._reply(200, {})

        return Handler
