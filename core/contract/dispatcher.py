"""The one map from a contract call's `input.type` to the core; the RunPod handler and the pod's routes call it.

`dispatch(service, payload)` takes the `input` object (without the `{"input": ...}` envelope) and returns the
output dict, or `{"error": "<one clear sentence>"}`: it never raises for bad input. With no `type` but a
`prompt`, the call means `generate`.

Outputs, by type:

- `health`: the health object of `JobService.health` (core.health).
- `upload_training_data`: the upload summary `{dataset, saved, skipped, renamed, images, captions,
  images_without_caption}`. A file whose content is not valid base64 refuses the whole call (nothing written).
  With `dataset_url` instead of `files`: the zip at that https:// or s3:// URL (core.storage.dataset_url).
- `train`, `train_with_yaml`, `generate`, `caption_dataset`: with `wait` (the default) the finished process; a
  process that failed or was cancelled comes back with a top-level `error` too, so RunPod marks the call FAILED. With
  `"wait": false`: `{process_id, status, type}` at once (the seed's behaviour).
  Any of the three also takes `webhook` (a URL that receives the final process, signed the Standard Webhooks way)
  and `webhook_progress`. `train`/`train_with_yaml` with `resume_from: <process_id>` (and no other training field)
  start a new attempt of that failed or cancelled training from its newest intact checkpoint.
- `processes`: `{"processes": [process, ...], "next_cursor": str | None}`; filters `status`, `job_type`.
- `process_status`, `cancel`: the process; `process_status` with `"metrics": true` adds `metrics`, the loss
  history as `GET /jobs/{id}/metrics` (`since_step` to get only newer points). `cancel` with `"save": true` has a
  running training save a checkpoint first. Saving or sampling without stopping are REST-only (`POST
  /jobs/{id}/save`, `/sample`): `cancel` gains the one control a contract caller needs (stop without losing work).
- `list_captions`: `{dataset, total, captioned, images: [{image, caption, has_caption, size}], next_cursor}`;
  `set_caption`: `{image, caption, has_caption, size}`.
- `lora`: `{"loras": [...]}`; `list_models`: `{"base_models": [...], "loras": [...]}`; `list_files`: `{"files": [...]}`.
- `download_file`, `download`, `bulk_download`: one chunk `{file_path, name, content (base64), size, offset,
  length, next_offset (null at the end), done, sha256 (of the whole file)}`; `download` adds `process_id`,
  `artifact` and `kind`, `bulk_download` adds `files` (how many are in the zip). Ask again with
  `offset = next_offset` until `done`. A chunk is at most what fits the /run payload limit after base64.
  With a bucket configured, a file in the bucket comes as `{delivery: "url", url, expires_at, expires_in, key,
  name, size, sha256}` instead (core.contract.object_downloads), unless the call asks `"delivery": "base64"`.

A process is `core.contract.views.job_view` with its `error` renamed `process_error`: RunPod reads a truthy top-level
`error` as the failure of the call itself, and asking for the status of a failed process is not a failure.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from core.contract.downloads import bulk_download, download, download_file
from core.contract.inputs import (
    CONTRACT_INPUT_MODELS,
    CancelInput,
    ListCaptionsInput,
    ListFilesInput,
    ProcessesInput,
    ProcessStatusInput,
    SetCaptionInput,
    UploadInput,
)
from core.contract.validation import check_depth, parse
from core.contract.views import job_view
from core.errors import Conflict, InvalidInput, LorapodError, NotFound, is_disk_full
from core.jobs.metrics_history import MetricsStore, metrics_view
from core.jobs.requests import JOB_REQUEST_MODELS, WEBHOOK_FIELDS, WebhookFields, job_type_of
from core.jobs.rows import Job, JobStatus
from core.jobs.service import JobService
from core.storage.catalog import list_base_models, list_loras
from core.storage.files import list_files

log = logging.getLogger("lorapod.dispatcher")

SEED_TYPES = (
    "health",
    "upload_training_data",
    "train",
    "train_with_yaml",
    "generate",
    "processes",
    "process_status",
    "lora",
    "list_models",
    "cancel",
    "download",
    "bulk_download",
    "list_files",
    "download_file",
)
# lorapod's extensions of the seed's fourteen: a caption job and caption editing.
EXTENSION_TYPES = ("caption_dataset", "list_captions", "set_caption")
CONTRACT_TYPES = SEED_TYPES + EXTENSION_TYPES
# Answered at once from the database and the workspace: no process to wait on, no network, no large file.
INSTANT_TYPES = frozenset(
    {"health", "processes", "process_status", "lora", "list_models", "list_files", "list_captions", "set_caption"}
)
ProgressCallback = Callable[[dict[str, Any]], None]
T = TypeVar("T")
# Beyond the trainer's own SIGINT-to-SIGKILL grace: time for it to exit and the job to be marked.
_STOP_SLACK_SECONDS = 30.0


async def dispatch(
    service: JobService,
    payload: dict[str, Any],
    *,
    progress: ProgressCallback | None = None,
    wait: bool | None = None,
    stop_on_cancel: bool = True,
) -> dict[str, Any]:
    """Run one contract call and return its output, or {"error": ...}; never raises for bad input.

    progress receives throttled progress dicts while a train/generate call waits. wait is the default for
    train/generate calls that carry no `wait` field (True when None). When the awaiting task is cancelled
    and stop_on_cancel is true, the process is cancelled and awaited (trainer gone) before the
    CancelledError is re-raised.
    """
    try:
        return await _dispatch(service, payload, progress, wait, stop_on_cancel)
    except LorapodError as exc:
        return {"error": error_sentence(exc)}
    except OSError as exc:
        if exc.errno in (errno.ENAMETOOLONG, errno.EILSEQ):
            return {"error": "path: is too long or not a valid file name"}
        if is_disk_full(exc):
            return {"error": "the server's disk is full; nothing was kept"}
        log.exception("contract call failed")
        return {"error": f"internal error: {type(exc).__name__}: {exc}"}
    except Exception as exc:
        log.exception("contract call failed")
        return {"error": f"internal error: {type(exc).__name__}: {exc}"}


def is_instant(payload: Any) -> bool:
    """True for a call of one of the INSTANT_TYPES (a caller may run it inline instead of queueing it)."""
    return isinstance(payload, dict) and job_type_of(payload) in INSTANT_TYPES


def error_sentence(exc: LorapodError) -> str:
    """The error as one sentence that starts with the field at fault when there is one."""
    if exc.field and not exc.message.startswith(exc.field):
        return f"{exc.field}: {exc.message}"
    return exc.message


async def _dispatch(
    service: JobService,
    payload: Any,
    progress: ProgressCallback | None,
    wait: bool | None,
    stop_on_cancel: bool,
) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise InvalidInput("input", "must be a JSON object")
    check_depth(payload, "input")
    kind = job_type_of(payload)
    expected = ", ".join(CONTRACT_TYPES)
    if kind is None:
        if payload.get("type") is not None:
            raise InvalidInput("type", f"must be a string, one of {expected}")
        raise InvalidInput("type", f"is required (one of {expected}); with no type, a prompt means generate")
    if kind in JOB_REQUEST_MODELS:
        return await _job(service, kind, payload, progress, wait, stop_on_cancel)
    model = CONTRACT_INPUT_MODELS.get(kind)
    if model is None:
        raise InvalidInput("type", f"unknown type '{kind[:64]}'; expected one of {expected}")
    data = parse(model, payload)
    handler = _HANDLERS[kind]
    if kind == "health":
        return await _shared_health(service)(lambda: asyncio.to_thread(handler, service, data))
    return await asyncio.to_thread(handler, service, data)


class SharedRun(Generic[T]):
    """Concurrent awaiters share one run; each joins the first run that starts after its call, so no answer is
    older than the call that gets it (a run in progress is waited out, not joined)."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._running: asyncio.Future[T] | None = None
        self._next: asyncio.Future[T] | None = None

    async def __call__(self, fn: Callable[[], Awaitable[T]]) -> T:
        """The result of the next run: of fn when this call queues it, else of the fn of the call that did."""
        if self._next is None:
            self._next = asyncio.ensure_future(self._run(self._running, fn))
        return await asyncio.shield(self._next)

    async def _run(self, previous: asyncio.Future[T] | None, fn: Callable[[], Awaitable[T]]) -> T:
        if previous is not None and not previous.done():
            await asyncio.wait({previous})
        self._running, self._next = self._next, None  # from here on, new callers queue the run after this one
        return await fn()


_HEALTH_RUNS: weakref.WeakKeyDictionary[JobService, SharedRun[dict[str, Any]]] = weakref.WeakKeyDictionary()


def _shared_health(service: JobService) -> SharedRun[dict[str, Any]]:
    # Health calls come in bursts (every client polls it); concurrent ones share one look at the worker.
    shared = _HEALTH_RUNS.get(service)
    if shared is None or shared.loop is not asyncio.get_running_loop():
        shared = _HEALTH_RUNS[service] = SharedRun()
    return shared


# ----- trainings and generations


async def _job(
    service: JobService,
    kind: str,
    payload: dict[str, Any],
    progress: ProgressCallback | None,
    wait: bool | None,
    stop_on_cancel: bool,
) -> dict[str, Any]:
    body = dict(payload)
    # `wait` steers the call, not the job, and the job models forbid unknown fields: take it out first.
    wait_field = body.pop("wait", None)
    if wait_field is not None and not isinstance(wait_field, bool):
        raise InvalidInput("wait", "must be true or false")
    should_wait = wait_field if wait_field is not None else (wait if wait is not None else True)
    resume_from = body.pop("resume_from", None)
    if resume_from is not None:
        job = resume_request(service, kind, resume_from, body)
    else:
        request = parse(JOB_REQUEST_MODELS[kind], body)
        if kind == "generate":  # the first generation after start waits for the environment check
            await service.generation.settle()
        await asyncio.to_thread(service.prepare, request)  # with a bucket: the datasets onto this worker's disk
        # Submitted on the loop, not in a thread: a cancel arriving now finds the job already created and reported.
        job = service.submit(request)
    if not should_wait:
        return {"process_id": job.id, "status": str(job.status), "type": str(job.type)}
    reporter = ProgressReporter(progress, service.settings.progress_interval_seconds)
    reporter.send(job)
    try:
        job = await service.wait(job.id, on_change=reporter)
    except asyncio.CancelledError:
        if stop_on_cancel:
            await _stop(service, job.id)
        raise
    return finished(job)


def resume_request(service: JobService, kind: str, resume_from: Any, body: dict[str, Any]) -> Job:
    """`resume_from: <process_id>` on train/train_with_yaml: a new attempt of that process, from its checkpoint."""
    if kind == "generate":
        raise InvalidInput("resume_from", "only a training can be resumed (type train or train_with_yaml)")
    if not isinstance(resume_from, str) or not 1 <= len(resume_from) <= 64:
        raise InvalidInput("resume_from", "must be the process_id of a failed or cancelled training")
    extra = sorted(set(body) - {"type", *WEBHOOK_FIELDS})
    if extra:
        raise InvalidInput(extra[0], "cannot be combined with resume_from: a resume keeps the stored config")
    hooks = parse(WebhookFields, {k: v for k, v in body.items() if k in WEBHOOK_FIELDS})
    return service.resume(resume_from, webhook=hooks.webhook, progress=hooks.webhook_progress)


def finished(job: Job) -> dict[str, Any]:
    """A finished process as a call's output; failed or cancelled adds a top-level error (the call failed)."""
    out = process_view(job)
    if job.status == JobStatus.failed:
        out["error"] = f"process {job.id} failed: {job.error or 'no reason was recorded'}"
    elif job.status == JobStatus.cancelled:
        out["error"] = f"process {job.id} was cancelled"
    return out


async def _stop(service: JobService, job_id: str) -> None:
    """Cancel the job and wait until it is terminal (its trainer gone), even if cancelled again meanwhile."""

    async def stop() -> None:
        try:
            service.cancel(job_id)
        except (Conflict, NotFound):
            return
        await service.wait(job_id, timeout=service.settings.stop_grace_seconds + _STOP_SLACK_SECONDS)

    task = asyncio.ensure_future(stop())
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        log.warning("stop of %s interrupted; it carries on in the background", job_id)
    except Exception:
        log.exception("could not stop %s", job_id)


class ProgressReporter:
    """Turns job changes into progress dicts for the caller: a status change at once, the rest throttled."""

    def __init__(self, callback: ProgressCallback | None, interval: float) -> None:
        self.callback = callback
        self.interval = interval
        self._last_status: str | None = None
        self._last_sent = 0.0

    def __call__(self, job: Job) -> None:
        # The finished process is the call's result; a late progress post could overwrite it (runpod-python #250).
        if self.callback is None or job.terminal:
            return
        if job.status == self._last_status and time.monotonic() - self._last_sent < self.interval:
            return
        self.send(job)

    def send(self, job: Job) -> None:
        """Report now, whatever the throttle says."""
        if self.callback is None:
            return
        self._last_status = str(job.status)
        self._last_sent = time.monotonic()
        try:
            self.callback(progress_of(job))
        except Exception:
            log.exception("progress callback failed")


def progress_of(job: Job) -> dict[str, Any]:
    """The progress dict reported while a call waits: status, step, total, percent, ETA, loss."""
    return {
        "process_id": job.id,
        "type": str(job.type),
        "status": str(job.status),
        "step": job.step,
        "total_steps": job.total_steps,
        "percent": job.percent,
        "eta_seconds": job.eta_seconds,
        "loss": job.loss,
        "info": job.info,
    }


def process_view(job: Job) -> dict[str, Any]:
    """job_view with `error` renamed `process_error` (a top-level `error` would fail the RunPod call)."""
    view = job_view(job)
    view["process_error"] = view.pop("error")
    return view


# ----- everything else (blocking file and database work, run in a thread)


def _health(service: JobService, _data: BaseModel) -> dict[str, Any]:
    return service.health()


def _upload(service: JobService, data: UploadInput) -> dict[str, Any]:
    if (data.files is None) == (data.dataset_url is None):
        raise InvalidInput("files", "give either files or dataset_url")
    if data.dataset_url is not None:
        return service.dataset_from_url(data.training_name, data.dataset_url).to_dict()
    files = [item.model_dump() for item in data.files or []]
    return service.datasets.save_base64(data.training_name, files).to_dict()


def _processes(service: JobService, data: ProcessesInput) -> dict[str, Any]:
    jobs, next_cursor = service.list(status=data.status, job_type=data.job_type, limit=data.limit, cursor=data.cursor)
    return {"processes": [process_view(job) for job in jobs], "next_cursor": next_cursor}


def _process_status(service: JobService, data: ProcessStatusInput) -> dict[str, Any]:
    job = service.get(data.process_id)
    view = process_view(job)
    if data.metrics:
        series = MetricsStore(service.engine).get(job.id)
        view["metrics"] = metrics_view(job, series, since_step=data.since_step)
    return view


def _cancel(service: JobService, data: CancelInput) -> dict[str, Any]:
    return process_view(service.cancel(data.process_id, save=data.save))


def _lora(service: JobService, _data: BaseModel) -> dict[str, Any]:
    return {"loras": [lora.to_dict() for lora in list_loras(service.workspace)]}


def _list_models(service: JobService, _data: BaseModel) -> dict[str, Any]:
    workspace = service.workspace
    return {
        "base_models": [model.to_dict() for model in list_base_models(workspace)],
        "loras": [lora.to_dict() for lora in list_loras(workspace)],
    }


def _list_files(service: JobService, data: ListFilesInput) -> dict[str, Any]:
    found = list_files(service.workspace, data.directory, data.pattern, limit=data.limit)
    return {"files": [info.to_dict() for info in found]}


def _list_captions(service: JobService, data: ListCaptionsInput) -> dict[str, Any]:
    return service.captions.page(data.training_name, limit=data.limit, cursor=data.cursor)


def _set_caption(service: JobService, data: SetCaptionInput) -> dict[str, Any]:
    return service.captions.set(data.training_name, data.image, data.caption)


_HANDLERS: dict[str, Callable[[JobService, Any], dict[str, Any]]] = {
    "health": _health,
    "upload_training_data": _upload,
    "processes": _processes,
    "process_status": _process_status,
    "cancel": _cancel,
    "lora": _lora,
    "list_models": _list_models,
    "list_files": _list_files,
    "download_file": download_file,
    "download": download,
    "bulk_download": bulk_download,
    "list_captions": _list_captions,
    "set_caption": _set_caption,
}
