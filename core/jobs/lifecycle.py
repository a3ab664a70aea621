"""One object owns a running job's state transitions: start, progress, artifacts, end."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from core.jobs.rows import JobStatus, utcnow
from core.jobs.store import JobStore
from core.storage.workspace import Workspace
from gpu.artifacts import Artifact
from gpu.progress import Progress


def artifact_record(artifact: Artifact, workspace: Workspace) -> dict[str, object]:
    """The stored, JSON-ready form of an artifact (paths relative to the workspace)."""
    return {
        "name": artifact.name,
        "kind": artifact.kind,
        "path": workspace.relative(artifact.path),
        "size": artifact.size,
        "step": artifact.step,
        "modified": datetime.fromtimestamp(artifact.modified, UTC).isoformat() if artifact.modified else None,
    }


class JobLifecycle:
    """Writes one job's transitions to the store and tells waiters, throttling progress writes."""

    def __init__(
        self,
        *,
        store: JobStore,
        workspace: Workspace,
        job_id: str,
        notify: Callable[[str], None],
        progress_interval: float,
        extra_artifacts: Callable[[], list[dict[str, object]]] | None = None,
    ) -> None:
        self.store = store
        self.workspace = workspace
        self.job_id = job_id
        self._notify = notify
        self._progress_interval = progress_interval
        self._last_progress_write = 0.0
        self._pending: Progress | None = None
        self._extra_artifacts = extra_artifacts or (lambda: [])

    def started(self, *, pid: int | None) -> None:
        """The job's process is alive."""
        self.store.update(self.job_id, pid=pid)
        self._notify(self.job_id)

    def progress(self, progress: Progress) -> None:
        """Record progress, at most once per progress_interval (the rest is coalesced)."""
        now = time.monotonic()
        self._pending = progress
        if now - self._last_progress_write < self._progress_interval:
            return
        self._write_progress(now)

    def flush_progress(self) -> None:
        """Write the newest progress state now, if one is pending."""
        if self._pending is not None:
            self._write_progress(time.monotonic())

    def _write_progress(self, now: float) -> None:
        progress = self._pending
        if progress is None:
            return
        self._pending = None
        self._last_progress_write = now
        self.store.update(
            self.job_id,
            step=progress.step,
            total_steps=progress.total or None,
            rate=progress.rate,
            eta_seconds=progress.eta_seconds,
            loss=progress.loss,
        )
        self._notify(self.job_id)

    def info(self, text: str) -> None:
        """The trainer's own status line ("Saving model", "Generating images - 1/2"), shown with the progress."""
        self.store.update(self.job_id, info=text[:512])
        self._notify(self.job_id)

    def artifacts(self, artifacts: list[Artifact]) -> None:
        """Record the job's current artifacts (checkpoints already written stay listed)."""
        records = [artifact_record(a, self.workspace) for a in artifacts] + self._extra_artifacts()
        self.store.update(self.job_id, artifacts=records)
        self._notify(self.job_id)

    def finished(self, status: JobStatus, *, error: str | None = None, exit_code: int | None = None) -> None:
        """The job ended: final status, error and exit code; progress flushed first."""
        self.flush_progress()
        fields: dict[str, object] = {"status": status, "finished_at": utcnow(), "error": error, "exit_code": exit_code}
        if status == JobStatus.completed:
            fields["eta_seconds"] = 0.0
        self.store.transition(self.job_id, from_statuses=[JobStatus.running, JobStatus.queued], **fields)
        self._notify(self.job_id)
