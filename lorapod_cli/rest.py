"""The CLI's client of a pod's REST API (httpx), with a Server-Sent Events reader that resumes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from lorapod_cli.errors import CliError, ExitCode
from lorapod_cli.events import Event, parse_sse_block
from lorapod_cli.transfer import digest_from_header

# A training can take hours; only the connection has a short limit, a stream may be silent between events.
_TIMEOUT = httpx.Timeout(60.0, connect=10.0)
_STREAM_TIMEOUT = httpx.Timeout(60.0, connect=10.0, read=90.0)  # the server sends a keep-alive every 15 s


def q(segment: str) -> str:
    """One URL path segment, so a name such as '../x' reaches the server as a name, not as a path."""
    return quote(segment, safe="")


def raise_for(response: httpx.Response) -> None:
    """Turn an error answer into a CliError with the server's own sentence."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
        message = str(body.get("error") or body.get("detail") or body)
    except ValueError:
        message = response.text[:300] or response.reason_phrase
    if response.status_code == 404:
        code = ExitCode.not_found
    elif response.status_code >= 500:
        code = ExitCode.unreachable
    else:
        code = ExitCode.usage
    if response.status_code == 401:
        message += " (set LORAPOD_API_KEY or api_key in the config file)"
    raise CliError(f"{response.status_code}: {message}", code)


class RestBackend:
    """One pod's REST API."""

    def __init__(self, url: str, api_key: str | None) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url
        self.http = httpx.Client(base_url=url, headers=headers, timeout=_TIMEOUT, follow_redirects=True)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; connection failures become a CliError naming the address."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach {self.url}: {exc}", ExitCode.unreachable) from exc
        raise_for(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """A request whose answer is JSON."""
        return self.request(method, path, **kwargs).json()

    def health(self) -> dict[str, Any]:
        """GET /health/details when the key allows it, else the open /health."""
        return dict(self.json("GET", "/health"))

    def upload(self, name: str, files: list[Path]) -> dict[str, Any]:
        """Send images, captions or a zip to the dataset in one multipart request."""
        handles = [path.open("rb") for path in files]
        try:
            parts = [("files", (path.name, handle)) for path, handle in zip(files, handles, strict=True)]
            return dict(self.json("POST", f"/datasets/{q(name)}/files", files=parts))
        finally:
            for handle in handles:
                handle.close()

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST /jobs."""
        return dict(self.json("POST", "/jobs", json=body))

    def jobs(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        """GET /jobs, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        return list(self.json("GET", "/jobs", params=params)["data"])

    def job(self, job_id: str) -> dict[str, Any]:
        """GET /jobs/{id}."""
        return dict(self.json("GET", f"/jobs/{q(job_id)}"))

    def metrics(self, job_id: str, since_step: int = -1) -> dict[str, Any]:
        """GET /jobs/{id}/metrics."""
        return dict(self.json("GET", f"/jobs/{q(job_id)}/metrics", params={"since_step": since_step}))

    def log_tail(self, job_id: str, lines: int) -> str:
        """The last lines of a job's log."""
        return self.request("GET", f"/jobs/{q(job_id)}/logs", params={"tail": lines}).text

    def supports(self, method: str, path: str, parameter: str | None = None) -> bool:
        """True when the server's OpenAPI lists this route (and query parameter): older servers lack some."""
        spec = self.json("GET", "/openapi.json")
        operation = spec.get("paths", {}).get(path, {}).get(method.lower())
        if operation is None:
            return False
        return parameter is None or any(p.get("name") == parameter for p in operation.get("parameters", []))

    def cancel(self, job_id: str, save: bool) -> dict[str, Any]:
        """POST /jobs/{id}/cancel (with ?save=true when the server offers it)."""
        if save and not self.supports("post", "/jobs/{job_id}/cancel", "save"):
            raise CliError("--save: this server cannot save on cancel (it needs a newer lorapod)", ExitCode.usage)
        return dict(self.json("POST", f"/jobs/{q(job_id)}/cancel", params={"save": "true"} if save else None))

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """GET /jobs/{id}/artifacts."""
        return list(self.json("GET", f"/jobs/{q(job_id)}/artifacts")["data"])

    def events(self, job_id: str) -> Iterator[Event]:
        """The job's SSE feed, reconnecting with Last-Event-ID when the connection drops, until `end`."""
        last_id: str | None = None
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_id} if last_id else {}
            try:
                with self.http.stream(
                    "GET", f"/jobs/{q(job_id)}/events", headers=headers, timeout=_STREAM_TIMEOUT
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise_for(response)
                    buffer = ""
                    for text in response.iter_text():
                        buffer += text.replace("\r\n", "\n")
                        while "\n\n" in buffer:
                            block, buffer = buffer.split("\n\n", 1)
                            event = parse_sse_block(block)
                            if event is None:
                                continue
                            failures = 0
                            last_id = event.id or last_id
                            yield event
                            if event.name == "end":
                                return
            except httpx.TransportError as exc:
                failures += 1
                if failures > 5:
                    raise CliError(f"lost the event stream of {job_id}: {exc}", ExitCode.unreachable) from exc
                time.sleep(min(2.0 * failures, 10.0))

    def download(self, path: str, target: Path, offset: int) -> Iterator[tuple[int, int, bytes, str | None]]:
        """The file at `path` from `offset` on: (start, size, block, sha256 hex) per block received."""
        # Asking from one byte before the part's end means a complete part still gets an answer with its digest.
        start = max(0, offset - 1)
        headers = {"Want-Repr-Digest": "sha-256=10"}
        if start:
            headers["Range"] = f"bytes={start}-"
        try:
            with self.http.stream("GET", path, headers=headers) as response:
                if response.status_code == 416:  # the file shrank below the part: download it whole
                    response.read()
                    yield from self.download(path, target, 0)
                    return
                if response.status_code >= 400:
                    response.read()
                    raise_for(response)
                start = start if response.status_code == 206 else 0
                size = int(response.headers.get("content-length", 0)) + start
                sha = digest_from_header(response.headers.get("repr-digest"))
                yield start, size, b"", sha
                for block in response.iter_bytes(1024 * 1024):
                    yield start, size, block, sha
                    start += len(block)
        except httpx.TransportError as exc:
            raise CliError(
                f"download of {target.name} interrupted: {exc}; run it again to resume", ExitCode.unreachable
            ) from exc
