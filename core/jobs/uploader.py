"""A job's artifacts into the bucket as they appear, so a worker stopped mid-job loses nothing it had saved.

One uploader per running job, with a thread of its own (uploads never block the event loop). The
lifecycle hands it the job's newest artifact records; it uploads each file whose size or mtime changed
since its last upload (multipart, checksummed, verified by ObjectStore.put_file) and reports back, so the
job record gains `object: {key, size, sha256}` per artifact. The log, rewritten all the time, goes up at
most every LOG_INTERVAL_SECONDS and once more at the end. drain() uploads whatever is still pending. The
job's record beside its artifacts (`jobs/<id>/job.json`, written by the lifecycle after each upload and at the
end) is how workers without a shared database find it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.jobs.rows import Job
from core.storage.objects import ObjectInfo, ObjectStore, StorageError
from core.storage.workspace import Workspace

log = logging.getLogger("lorapod.uploader")

LOG_INTERVAL_SECONDS = 30.0
RECORD_NAME = "job.json"


def job_key(objects: ObjectStore, job_id: str, name: str) -> str:
    """The key of one of a job's objects (an artifact name, or the record)."""
    return objects.key("jobs", job_id, name)


def write_record(objects: ObjectStore, record: dict[str, Any]) -> None:
    """The job's record (Job.model_dump(mode="json")) beside its artifacts, for workers without the database."""
    objects.put_json(job_key(objects, str(record["id"]), RECORD_NAME), record)


def read_record(objects: ObjectStore, job_id: str) -> Job | None:
    """A job's record from the bucket, or None when no worker wrote one."""
    if not job_id or "/" in job_id or job_id.startswith("."):
        return None
    data = objects.get_json(job_key(objects, job_id, RECORD_NAME))
    return Job.model_validate(data) if isinstance(data, dict) else None


class ArtifactUploader:
    """Uploads one job's artifacts in a background thread as they change."""

    def __init__(
        self, *, objects: ObjectStore, workspace: Workspace, job_id: str, on_uploaded: Callable[[], None]
    ) -> None:
        self.objects = objects
        self.workspace = workspace
        self.job_id = job_id
        self._on_uploaded = on_uploaded
        self._done: dict[str, tuple[tuple[int, int], ObjectInfo]] = {}  # name -> ((size, mtime_ns), object)
        self._latest: list[dict[str, Any]] = []
        self._last_log_upload = 0.0
        self._changed = threading.Condition()
        self._pass_lock = threading.Lock()  # one upload pass at a time (the thread's, or drain's)
        self._closed = False
        self._dirty = False
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name=f"upload-{job_id}", daemon=True)
        self._thread.start()

    def decorate(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The records with `object` added where the file as listed is the one uploaded."""
        out = []
        for record in records:
            done = self._done.get(str(record.get("name")))
            if done is not None and done[1].size == record.get("size"):
                record = {**record, "object": done[1].to_dict()}
            out.append(record)
        return out

    def submit(self, records: list[dict[str, Any]]) -> None:
        """The job's newest artifact records; changed files go up soon."""
        with self._changed:
            self._latest = list(records)
            self._dirty = True
            self._changed.notify()

    def drain(self) -> list[dict[str, Any]]:
        """Upload everything pending now, the log included; the decorated records. StorageError if some failed."""
        with self._changed:
            self._closed = True
            self._changed.notify()
        self._thread.join()
        errors = self._upload_pass(final=True)
        if errors:
            raise StorageError(f"{len(errors)} artifact(s) could not be stored in the bucket: {errors[0]}")
        return self.decorate(self._latest)

    def stop(self) -> None:
        """End the background thread without a last pass."""
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _loop(self) -> None:
        while True:
            with self._changed:
                if not self._dirty and not self._closed:
                    self._changed.wait(timeout=LOG_INTERVAL_SECONDS)
                if self._closed:
                    return
                self._dirty = False
            try:
                if self._upload_pass(final=False):
                    time.sleep(1.0)  # a failing bucket is retried at the next change, not in a tight loop
            except Exception:
                log.exception("artifact upload pass of %s failed", self.job_id)

    def _upload_pass(self, *, final: bool) -> list[str]:
        """Upload each listed file not yet up in its current state; the errors, one sentence each."""
        errors: list[str] = []
        uploaded = False
        with self._pass_lock:
            for record in list(self._latest):
                name = str(record.get("name"))
                path = self.workspace.root / str(record.get("path"))
                if record.get("kind") == "log" and not final:
                    if time.monotonic() - self._last_log_upload < LOG_INTERVAL_SECONDS:
                        continue
                    self._last_log_upload = time.monotonic()
                try:
                    if self._upload(name, path):
                        uploaded = True
                except (StorageError, OSError) as exc:
                    message = getattr(exc, "message", None) or f"{name}: {exc}"
                    errors.append(message)
                    log.warning("upload of %s/%s failed: %s", self.job_id, name, message)
            uploaded |= self._forget_pruned(errors)
        if uploaded:
            self.last_error = None
            self._on_uploaded()
        if errors:
            self.last_error = errors[0]
        return errors

    def _forget_pruned(self, errors: list[str]) -> bool:
        """Delete the objects of files the trainer pruned (max_step_saves_to_keep), so the bucket mirrors it."""
        listed = {str(record.get("name")) for record in self._latest}
        pruned = [name for name in self._done if name not in listed]
        for name in pruned:
            try:
                self.objects.delete(self._done[name][1].key)
            except StorageError as exc:
                errors.append(exc.message)
                continue
            del self._done[name]
        return bool(pruned)

    def _upload(self, name: str, path: Path) -> bool:
        """Upload one file unless its current state is already up; True when it went up."""
        try:
            before = path.stat()
        except FileNotFoundError:  # ai-toolkit prunes old checkpoints; a pruned one stays in the bucket
            return False
        state = (before.st_size, before.st_mtime_ns)
        done = self._done.get(name)
        if done is not None and done[0] == state:
            return False
        info = self.objects.put_file(job_key(self.objects, self.job_id, name), path)
        after = path.stat()
        if (after.st_size, after.st_mtime_ns) != state or info.size != before.st_size:
            return False  # still being written: the next pass uploads the finished file
        self._done[name] = (state, info)
        return True
