"""One object owns a running job's state transitions: start, progress, artifacts, end."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from core.jobs.metrics_history import MetricsRecorder
from core.jobs.rows import Job, JobStatus, utcnow
from core.jobs.store import JobStore
from core.jobs.uploader import ArtifactUploader, write_record
from core.storage.objects import ObjectStore, StorageError
from core.storage.workspace import Workspace
from gpu.artifacts import Artifact
from gpu.progress import Progress

log = logging.getLogger("lorapod.jobs")


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
        on_first_progress: Callable[[], None] | None = None,
        loss_history: MetricsRecorder | None = None,
        objects: ObjectStore | None = None,
    ) -> None:
        self.store = store
        self.workspace = workspace
        self.job_id = job_id
        self._notify = notify
        self._progress_interval = progress_interval
        self._last_progress_write = 0.0
        self._pending: Progress | None = None
        self._extra_artifacts = extra_artifacts or (lambda: [])
        self._on_first_progress = on_first_progress
        self._loss_history = loss_history
        self._records: list[dict[str, Any]] = []
        self.objects = objects
        self.uploader = (
            ArtifactUploader(objects=objects, workspace=workspace, job_id=job_id, on_uploaded=self._uploaded)
            if objects is not None
            else None
        )

    def started(self, *, pid: int | None) -> None:
        """The job's process is alive."""
        self.store.update(self.job_id, pid=pid)
        self._notify(self.job_id)

    def progress(self, progress: Progress) -> None:
        """Record progress, at most once per progress_interval (the rest is coalesced)."""
        now = time.monotonic()
        if self._on_first_progress is not None:
            first, self._on_first_progress = self._on_first_progress, None
            first()
        self._pending = progress
        if self._loss_history is not None:
            self._loss_history.add(progress)  # every state seen, not only the throttled ones written
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
        if self._loss_history is not None:
            self._loss_history.flush()
        self._notify(self.job_id)

    def info(self, text: str) -> None:
        """The trainer's own status line ("Saving model", "Generating images - 1/2"), shown with the progress."""
        self.store.update(self.job_id, info=text[:512])
        self._notify(self.job_id)

    def artifacts(self, artifacts: list[Artifact]) -> None:
        """Record the job's current artifacts (checkpoints already written stay listed)."""
        records = [artifact_record(a, self.workspace) for a in artifacts] + self._extra_artifacts()
        if self.uploader is not None:
            self._records = records
            self.uploader.submit(records)
            records = self.uploader.decorate(records)
        self.store.update(self.job_id, artifacts=records)
        self._notify(self.job_id)

    def _uploaded(self) -> None:
        """Called from the uploader's thread: the record gains the objects just uploaded, here and in the bucket.

        The bucket's copy of a running job's record is what other workers see if this one is stopped: the
        process, as far as it got, with every checkpoint it had saved.
        """
        if self.uploader is None or self.objects is None:
            return
        self.store.update(self.job_id, artifacts=self.uploader.decorate(self._records))
        self._notify(self.job_id)
        try:
            write_record(self.objects, self.store.get(self.job_id).model_dump(mode="json"))
        except StorageError as exc:
            log.warning("the record of %s could not be stored in the bucket: %s", self.job_id, exc.message)

    async def archive(
        self, status: JobStatus, error: str | None, exit_code: int | None
    ) -> tuple[JobStatus, str | None]:
        """With a bucket: the last uploads and the job's record beside its artifacts, before the job ends.

        Done before the status turns terminal, because a serverless worker may be stopped as soon as its
        caller sees the result. A completed job whose files could not be stored fails: on a worker without a
        volume they would be lost with it.
        """
        if self.uploader is None or self.objects is None:
            return status, error
        side = self._extra_artifacts()
        side_names = {record["name"] for record in side}
        self.uploader.submit([r for r in self._records if r.get("name") not in side_names] + side)
        try:
            records = await asyncio.to_thread(self.uploader.drain)
            self.store.update(self.job_id, artifacts=records)
        except StorageError as exc:
            if status == JobStatus.completed:
                status, error = JobStatus.failed, f"the job finished but its files could not be stored: {exc.message}"
            else:
                error = f"{error or status}; and its files could not be stored: {exc.message}"
        final = self.store.get(self.job_id).model_dump(mode="json")
        final.update(status=str(status), error=error, exit_code=exit_code, finished_at=utcnow().isoformat())
        try:
            await asyncio.to_thread(write_record, self.objects, final)
        except StorageError as exc:
            error = error or f"the job's record could not be stored in the bucket: {exc.message}"
        return status, error

    def close(self) -> None:
        """Stop the uploader's thread if archive() never ran (lorapod failed mid-job)."""
        if self.uploader is not None:
            self.uploader.stop()

    def finished(self, status: JobStatus, *, error: str | None = None, exit_code: int | None = None) -> Job | None:
        """Record the end (progress flushed first); the job, or None when it had already ended (a cancel won)."""
        self.flush_progress()
        if self._loss_history is not None:
            self._loss_history.flush(final=True)
        fields: dict[str, object] = {"status": status, "finished_at": utcnow(), "error": error, "exit_code": exit_code}
        if status == JobStatus.completed:
            fields["eta_seconds"] = 0.0
        moved = self.store.transition(self.job_id, from_statuses=[JobStatus.running, JobStatus.queued], **fields)
        self._notify(self.job_id)
        return self.store.find(self.job_id) if moved else None
