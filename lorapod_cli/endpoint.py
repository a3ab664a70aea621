"""The CLI's client of a RunPod endpoint: the contract's types through the stock `runpod` client.

The SDK reads RUNPOD_ENDPOINT_BASE_URL once at import, so the same code drives a pod's /v2 routes too.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lorapod_cli.errors import CliError, ExitCode
from lorapod_cli.events import Event

FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
TERMINAL = {"completed", "failed", "cancelled"}
# Raw bytes per upload call: base64 grows them by a third and /runsync takes at most 20 MB.
UPLOAD_BATCH_BYTES = 6 * 1024 * 1024
POLL_SECONDS = 2.0


def _process(view: dict[str, Any]) -> dict[str, Any]:
    """A contract process as the REST API shows a job (`process_error` back to `error`)."""
    out = dict(view)
    if "process_error" in out:
        out["error"] = out.pop("process_error")
    return out


class EndpointBackend:
    """One RunPod endpoint (or a pod's /v2 mirror), through runpod.Endpoint."""

    def __init__(self, endpoint_id: str, api_key: str) -> None:
        import runpod

        self.endpoint = runpod.Endpoint(endpoint_id, api_key=api_key)
        self.poll_seconds = POLL_SECONDS

    def call(self, payload: dict[str, Any], *, timeout: int = 300) -> dict[str, Any]:
        """Run one contract call to its end; the call's `error` becomes a CliError."""
        import requests

        client, endpoint_id = self.endpoint.rp_client, self.endpoint.endpoint_id
        try:
            # The SDK's run_sync drops a failed call's error, so its client's post/get are used directly.
            result = client.post(f"{endpoint_id}/runsync", {"input": payload}, timeout=timeout)
            while result.get("status") not in FINAL:
                time.sleep(1.0)
                result = client.get(f"{endpoint_id}/status/{result['id']}", timeout=30)
        except requests.RequestException as exc:
            code = ExitCode.unreachable
            response = getattr(exc, "response", None)
            if response is not None and 400 <= response.status_code < 500:
                code = ExitCode.usage
            raise CliError(f"endpoint {endpoint_id}: {exc}", code) from exc
        except RuntimeError as exc:  # the SDK's "unauthorized" and "API key not set"
            raise CliError(f"endpoint {endpoint_id}: {exc} (check RUNPOD_API_KEY)", ExitCode.usage) from exc
        output = result.get("output")
        error = result.get("error") or (output.get("error") if isinstance(output, dict) else None)
        if error:
            code = ExitCode.not_found if "no job with id" in str(error) else ExitCode.usage
            raise CliError(str(error), code)
        if result.get("status") != "COMPLETED":
            raise CliError(f"the call ended {result.get('status')}", ExitCode.unreachable)
        return output if isinstance(output, dict) else {"output": output}

    def health(self) -> dict[str, Any]:
        """The worker's health."""
        return self.call({"type": "health"})

    def upload(self, name: str, files: list[Path]) -> dict[str, Any]:
        """upload_training_data in batches that fit the payload limit; the summaries added up."""
        total: dict[str, Any] = {"dataset": name, "saved": [], "skipped": []}
        batch: list[dict[str, str]] = []
        size = 0
        for path in [*files, None]:
            data = path.read_bytes() if path is not None else b""
            if batch and (path is None or size + len(data) > UPLOAD_BATCH_BYTES):
                result = self.call({"type": "upload_training_data", "training_name": name, "files": batch})
                for key in ("saved", "skipped"):
                    total[key] += result.get(key, [])
                total.update({k: v for k, v in result.items() if k not in ("saved", "skipped")})
                batch, size = [], 0
            if path is not None:
                batch.append({"filename": path.name, "content": base64.b64encode(data).decode()})
                size += len(data)
        return total

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        """Start a train, train_with_yaml or generate without waiting for it."""
        started = self.call({**body, "wait": False})
        return self.job(str(started["process_id"]))

    def jobs(self, status: str | None, limit: int) -> list[dict[str, Any]]:
        """processes, newest first."""
        payload: dict[str, Any] = {"type": "processes", "limit": limit}
        if status:
            payload["status"] = status
        return [_process(p) for p in self.call(payload)["processes"]]

    def job(self, job_id: str) -> dict[str, Any]:
        """process_status."""
        return _process(self.call({"type": "process_status", "process_id": job_id}))

    def metrics(self, job_id: str, since_step: int = -1) -> dict[str, Any]:
        """process_status with the loss history."""
        payload = {"type": "process_status", "process_id": job_id, "metrics": True, "since_step": since_step}
        return dict(self.call(payload)["metrics"])

    def _log_chunk(self, log_path: str, offset: int) -> tuple[str, int]:
        """The log from offset on (a chunk of it) and where to continue."""
        chunk = self.call({"type": "download_file", "file_path": log_path, "offset": offset})
        text = base64.b64decode(chunk.get("content") or "").decode("utf-8", errors="replace")
        return text, int(chunk.get("next_offset") or chunk.get("size") or offset)

    def log_tail(self, job_id: str, lines: int) -> str:
        """The last lines of the job's log (bar redraws collapsed)."""
        log_path = self.job(job_id).get("log_path")
        if not log_path:
            return ""
        size = int(self.call({"type": "download_file", "file_path": log_path, "offset": 0, "length": 1})["size"])
        text, _ = self._log_chunk(log_path, max(0, size - 256 * 1024))
        return "\n".join(collapse(text.splitlines())[-lines:]) + "\n"

    def cancel(self, job_id: str, save: bool) -> dict[str, Any]:
        """cancel (the contract refuses `save` clearly where it does not know it)."""
        payload: dict[str, Any] = {"type": "cancel", "process_id": job_id}
        if save:
            payload["save"] = True
        return _process(self.call(payload))

    def artifacts(self, job_id: str) -> list[dict[str, Any]]:
        """The process's artifacts."""
        return list(self.job(job_id).get("artifacts") or [])

    def events(self, job_id: str) -> Iterator[Event]:
        """Poll process_status (with metrics) and the log into the same events a pod's SSE feed sends."""
        step, log_offset, sent_progress = -1, 0, None
        job = self.job(job_id)
        yield Event("status", job)
        while True:
            view = _process(
                self.call({"type": "process_status", "process_id": job_id, "metrics": True, "since_step": step})
            )
            metrics = view.pop("metrics", {})
            if view.get("log_path"):
                text, log_offset = self._log_chunk(view["log_path"], log_offset)
                lines = collapse(text.splitlines())
                if lines:
                    yield Event("log", {"lines": lines})
            if view["progress"] != sent_progress:
                sent_progress = view["progress"]
                yield Event("progress", {"status": view["status"], **view["progress"]})
            if metrics.get("points"):
                step = metrics["points"][-1]["step"]
            yield Event("metrics", metrics)
            if view["status"] in TERMINAL:
                yield Event("status", view)
                yield Event("end", {"id": job_id, "status": view["status"], "error": view.get("error")})
                return
            time.sleep(self.poll_seconds)

    def download(self, job_id: str, artifact: str, offset: int) -> Iterator[tuple[int, int, bytes, str | None]]:
        """An artifact in chunks of the contract's `download` from offset on."""
        while True:
            chunk = self.call({"type": "download", "process_id": job_id, "artifact": artifact, "offset": offset})
            data = base64.b64decode(chunk.get("content") or "")
            yield int(chunk["offset"]), int(chunk["size"]), data, str(chunk["sha256"])
            if chunk.get("done") or chunk.get("next_offset") is None:
                return
            offset = int(chunk["next_offset"])


def collapse(lines: list[str]) -> list[str]:
    """Each line's last state as a terminal shows it (tqdm redraws with \\r)."""
    out = []
    for line in lines:
        pieces = [p for p in line.split("\r") if p.strip()]
        if pieces:
            out.append(pieces[-1].rstrip())
    return out
