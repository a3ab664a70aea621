"""The job service both adapters call: submit, inspect, list, cancel, delete and wait for jobs."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from core.db import make_engine, migrate
from core.errors import Conflict, InvalidInput, NotFound
from core.health import health_report, install_scrape_gauges
from core.jobs.artifacts import (
    current_artifacts,
    final_lora,
    find_artifact,
    outputs_elsewhere,
    remove_job_files,
    require_outputs_here,
)
from core.jobs.caption import CaptionOptions, CaptionParams
from core.jobs.cluster import PodLink
from core.jobs.control import Flag, ask_save_elsewhere, raise_flag
from core.jobs.dataset_prep import datasets_of_job, datasets_of_request, materialise
from core.jobs.executions import subprocess_env
from core.jobs.generation import GenerateParams, build_generation_request
from core.jobs.idempotency import keyed, request_fingerprint, same_request
from core.jobs.new_jobs import JobKeys, caption_row, generation_row, require_toolkit, training_row
from core.jobs.notify import Notifier
from core.jobs.recovery import recover_jobs
from core.jobs.requests import WEBHOOK_FIELDS, CaptionRequest, JobRequest, TrainRequest, TrainYamlRequest
from core.jobs.resume import prepare_resume, prepare_retry
from core.jobs.rows import Job, JobStatus, JobType, new_job_id, utcnow
from core.jobs.runner import JobRunner
from core.jobs.scheduler import Scheduler, Slot
from core.jobs.store import JobStore
from core.jobs.uploader import read_record
from core.jobs.waiting import wait_for_job, watch_job
from core.metrics import ServiceMetrics
from core.readiness import GenerationProbe
from core.settings import Settings
from core.storage.bucket_datasets import dataset_store
from core.storage.bundles import BundleKeeper
from core.storage.captions import CaptionStore
from core.storage.dataset_url import save_from_url
from core.storage.datasets import UploadSummary
from core.storage.objects import ObjectStore, StorageError
from core.storage.workspace import Workspace
from core.training.builder import build_training_config
from core.training.params import TrainParams
from core.training.yaml_rewrite import parse_yaml_config
from core.webhooks.jobs import JobWebhooks, webhook_field
from gpu.devices import detect_gpus, parse_gpu_list

log = logging.getLogger("lorapod.jobs")
_REPO_ROOT = Path(__file__).resolve().parents[2]


class JobService:
    """lorapod's one job service: a process table, a scheduler over GPU slots, and the runners."""

    def __init__(self, settings: Settings, *, engine: Engine | None = None) -> None:
        self.settings = settings
        self.workspace = Workspace(settings.workspace).ensure()
        self.engine = engine or make_engine(settings.effective_database_url)
        self.store = JobStore(self.engine)
        self.objects = ObjectStore.from_settings(settings)  # None: no bucket, the workspace alone
        # one store, so REST and contract uploads into the same dataset share its commit lock
        self.datasets = dataset_store(settings, self.workspace, self.objects)
        self.captions = CaptionStore(self.datasets)
        self.notifier = Notifier()
        self.metrics = ServiceMetrics()
        self.webhooks = JobWebhooks(store=self.store, settings=settings, notifier=self.notifier)
        self.runner = JobRunner(
            settings=settings,
            workspace=self.workspace,
            store=self.store,
            notifier=self.notifier,
            metrics=self.metrics,
            objects=self.objects,
            before_training=self.prepare_job if self.objects is not None else None,
        )
        try:
            gpus = parse_gpu_list(settings.gpus, detect_gpus() if not settings.gpus else [])
        except ValueError as exc:
            raise InvalidInput("LORAPOD_GPUS", str(exc)) from exc
        self.scheduler = Scheduler(
            store=self.store,
            slots=[Slot(gpu=gpu) for gpu in gpus],
            worker_id=settings.worker_id,
            run_job=self.runner.run,
            lease_seconds=settings.lease_seconds,
        )
        # leases and, on PostgreSQL, other pods' changes as they commit
        self.pods = PodLink(
            store=self.store,
            scheduler=self.scheduler,
            runner=self.runner,
            notifier=self.notifier,
            workspace=self.workspace,
            lease_seconds=settings.lease_seconds,
            stop_grace=settings.stop_grace_seconds,
        )
        # Checked once, in the background, when the service starts: importing torch takes seconds.
        self.generation = GenerationProbe(
            settings.ai_toolkit_python, env=subprocess_env(settings, self.workspace), cwd=_REPO_ROOT
        )
        self.bundles = BundleKeeper(self.workspace, retention_seconds=settings.bundle_retention_seconds)
        install_scrape_gauges(
            metrics=self.metrics,
            store=self.store,
            scheduler=self.scheduler,
            workspace_root=self.workspace.root,
            generation=self.generation,
        )
        self._housekeeping: asyncio.Task[None] | None = None
        self.started = False

    # -- life of the service -------------------------------------------------------------

    async def start(self) -> None:
        """Migrate, recover jobs a previous run left behind, and start scheduling."""
        if self.started:
            return
        migrate(self.engine)
        self.generation.start()
        if self.objects is not None:
            try:
                await asyncio.to_thread(self.objects.check)
            except StorageError as exc:  # health reports it; calls that need the bucket fail with the same words
                log.error("object storage is not usable: %s", exc.message)
        self.scheduler.attach(asyncio.get_running_loop())
        await recover_jobs(
            store=self.store,
            scheduler=self.scheduler,
            worker_id=self.settings.worker_id,
            current_artifacts=self.current_artifacts,
            metrics=self.metrics,
        )
        self.started = True
        await self.pods.start()
        self.webhooks.start(asyncio.get_running_loop())
        self._housekeeping = asyncio.create_task(self._housekeep(), name="lorapod-housekeeping")
        self.scheduler.kick()

    async def close(self) -> None:
        """Stop scheduling; running trainers keep going and are picked up again at the next start."""
        if self._housekeeping:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        await self.pods.close()
        await self.scheduler.shutdown()
        await self.webhooks.close()
        self.started = False

    async def _housekeep(self) -> None:
        # Other workers sharing the database may queue jobs or request cancels; look every few seconds.
        while True:
            await asyncio.sleep(2.0)
            try:
                for job_id in self.store.cancel_requested_on(self.settings.worker_id):
                    self.runner.stop(job_id)
                self.scheduler.kick()
                await asyncio.to_thread(self.bundles.prune)
            except Exception:
                log.exception("housekeeping failed")

    # -- submission ----------------------------------------------------------------------

    def submit_training(
        self,
        params: TrainParams,
        *,
        idempotency_key: str | None = None,
        autocaption: CaptionOptions | None = None,
        request_hash: str | None = None,
        webhook: dict[str, Any] | None = None,
    ) -> Job:
        """Queue a training from simple parameters; lorapod writes the ai-toolkit config."""
        require_toolkit(self.settings)
        job_id = new_job_id(JobType.train)
        plan = build_training_config(params, workspace=self.workspace, job_id=job_id)
        keys = JobKeys(idempotency_key, request_hash, webhook)
        return self._enqueue(
            training_row(job_id, plan, params.model_dump(mode="json"), self.workspace, keys, autocaption)
        )

    def submit_training_yaml(
        self,
        yaml_text: str,
        *,
        idempotency_key: str | None = None,
        autocaption: CaptionOptions | None = None,
        request_hash: str | None = None,
        webhook: dict[str, Any] | None = None,
    ) -> Job:
        """Queue a training from a whole ai-toolkit config given as YAML."""
        require_toolkit(self.settings)
        job_id = new_job_id(JobType.train)
        plan = parse_yaml_config(
            yaml_text, workspace=self.workspace, job_id=job_id, max_bytes=self.settings.max_yaml_bytes
        )
        stored = {"yaml_config_bytes": len(yaml_text.encode())}
        keys = JobKeys(idempotency_key, request_hash, webhook)
        return self._enqueue(training_row(job_id, plan, stored, self.workspace, keys, autocaption))

    def submit_caption(
        self,
        params: CaptionParams,
        *,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        webhook: dict[str, Any] | None = None,
    ) -> Job:
        """Queue a caption job on a dataset: it runs on a slot's warm captioner."""
        return self._enqueue(caption_row(params, self.workspace, JobKeys(idempotency_key, request_hash, webhook)))

    def submit_generation(
        self,
        params: GenerateParams,
        *,
        idempotency_key: str | None = None,
        request_hash: str | None = None,
        webhook: dict[str, Any] | None = None,
    ) -> Job:
        """Queue a generation on the warm generator."""
        self.generation.require()
        job_id = new_job_id(JobType.generate)
        request = build_generation_request(
            params, workspace=self.workspace, job_id=job_id, lora_for_job=self.final_lora_of
        )
        keys = JobKeys(idempotency_key, request_hash, webhook)
        return self._enqueue(generation_row(params, request, self.workspace, keys))

    def submit(self, request: JobRequest, *, idempotency_key: str | None = None) -> Job:
        """Queue any job request (train, train_with_yaml, generate); a reused key needs the same request."""
        fingerprint = request_fingerprint(request) if idempotency_key else None
        hook = webhook_field(self.settings, request.webhook, request.webhook_progress)
        keys: dict[str, Any] = {"idempotency_key": idempotency_key, "request_hash": fingerprint, "webhook": hook}
        if isinstance(request, TrainRequest):
            params = TrainParams.model_validate(request.model_dump(exclude={"type", "autocaption", *WEBHOOK_FIELDS}))
            return self.submit_training(params, autocaption=request.autocaption, **keys)
        if isinstance(request, TrainYamlRequest):
            return self.submit_training_yaml(request.text, autocaption=request.autocaption, **keys)
        if isinstance(request, CaptionRequest):
            return self.submit_caption(request, **keys)
        params_g = GenerateParams.model_validate(request.model_dump(exclude={"type", *WEBHOOK_FIELDS}))
        return self.submit_generation(params_g, **keys)

    def _enqueue(self, job: Job) -> Job:
        if job.idempotency_key and (existing := self.store.by_idempotency_key(job.idempotency_key)):
            return same_request(existing, job)
        stored = same_request(self.store.insert(job), job)
        self.metrics.job_submitted(stored.type)
        self.webhooks.watch(stored)
        self.notifier.notify(stored.id)
        self.scheduler.kick()
        return stored

    # -- reading -------------------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """One job, or NotFound; with a bucket, a job another worker ran is read from its record there."""
        job = self.store.find(job_id)
        if job is None and self.objects is not None:
            job = read_record(self.objects, job_id)
        if job is None:
            raise NotFound(f"no job with id '{job_id}'", field="process_id")
        return job

    def dataset_from_url(self, name: str, url: str) -> UploadSummary:
        """Add the files of the zip at an https:// or s3:// URL to a dataset (blocking: call it in a thread)."""
        allow = self.settings.dataset_url_allow_private
        return save_from_url(self.datasets, name, url, objects=self.objects, allow_private=allow)

    def prepare(self, request: JobRequest) -> None:
        """Blocking work before a submit (call it in a thread): with a bucket, the datasets come onto this disk."""
        materialise(self.datasets, datasets_of_request(request), missing_ok=True)

    def prepare_job(self, job: Job) -> None:
        """Before a training starts (in a thread): its datasets as the bucket has them now."""
        materialise(self.datasets, datasets_of_job(job, self.workspace), missing_ok=False)

    def list(
        self, *, status: str | None = None, job_type: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Job], str | None]:
        """Jobs newest first, filtered, with the cursor of the next page."""
        if status is not None and status not in JobStatus.__members__:
            raise InvalidInput("status", f"must be one of {', '.join(JobStatus)}")
        if job_type is not None and job_type not in JobType.__members__:
            raise InvalidInput("type", f"must be one of {', '.join(JobType)}")
        if not 1 <= limit <= 500:
            raise InvalidInput("limit", "must be between 1 and 500")
        return self.store.page(status=status, job_type=job_type, limit=limit, cursor=cursor)

    def final_lora_of(self, job_id: str) -> Path | None:
        """The final LoRA file of a finished training job, if it wrote one (fetched from the bucket if need be)."""
        try:
            job = self.get(job_id)
        except NotFound:
            return None
        return final_lora(job, self.workspace, self.objects)

    def queue_depth(self) -> int:
        """How many jobs wait for a slot."""
        return self.store.counts_by_status().get(JobStatus.queued, 0)

    # -- changing ------------------------------------------------------------------------

    def cancel(self, job_id: str, *, save: bool = False) -> Job:
        """Cancel a queued job at once, or ask a running one to stop (a training saving first); Conflict once ended."""
        job = self.store.get(job_id)
        if job.terminal:
            raise Conflict(f"job '{job_id}' has already finished ({job.status})", field="process_id")
        if save and job.type != JobType.train:
            raise InvalidInput("save", "only a training has a checkpoint to save before it stops")
        if self.store.transition(
            job_id,
            from_statuses=[JobStatus.queued],
            status=JobStatus.cancelled,
            finished_at=utcnow(),
            cancel_requested=True,
            error="cancelled before it started",
        ):
            self.metrics.job_finished(job.type, JobStatus.cancelled, None)
            self.notifier.notify(job_id)
            return self.store.get(job_id)
        if save and not self.runner.stop(job_id, save=True):
            ask_save_elsewhere(job, self.workspace)  # before cancel_requested: the owner must see the save first
        self.store.update(job_id, cancel_requested=True)
        self.runner.stop(job_id, save=save)
        self.notifier.notify(job_id)
        return self.store.get(job_id)

    def request(self, job_id: str, flag: Flag) -> Job:
        """Ask a running training to save a checkpoint (save_now) or render its samples (sample_now) now."""
        raise_flag(self.store.get(job_id), self.workspace, flag)
        return self.store.get(job_id)

    def resume(
        self, job_id: str, *, idempotency_key: str | None = None, webhook: str | None = None, progress: bool = False
    ) -> Job:
        """A new attempt of a failed or cancelled training from its newest intact checkpoint, linked to it."""
        require_toolkit(self.settings)
        hook = webhook_field(self.settings, webhook, progress) if webhook or progress else None
        new = prepare_resume(self.store.get(job_id), self.workspace)
        if hook is not None:
            new.webhook = hook
        return self._enqueue(keyed(new, idempotency_key, f"resume:{job_id}"))

    def retry(self, job_id: str, *, idempotency_key: str | None = None) -> Job:
        """A failed job started again from scratch, linked to it."""
        old = self.store.get(job_id)
        if old.type == JobType.generate and old.status == JobStatus.failed:
            new = self.submit_generation(GenerateParams.model_validate(old.params))
            self.store.update(new.id, retried_from=old.id)
            return self.store.get(new.id)
        require_toolkit(self.settings)
        return self._enqueue(keyed(prepare_retry(old, self.workspace), idempotency_key, f"retry:{job_id}"))

    def delete(self, job_id: str, *, files: bool = False) -> None:
        """Remove a finished job's record, and with files=True its output folder and log."""
        job = self.store.get(job_id)
        if not job.terminal:
            raise Conflict(f"job '{job_id}' is {job.status}; cancel it before deleting", field="process_id")
        paths = [rel for rel in (job.output_dir, job.log_path) if rel]
        if files and self.objects is not None:
            self.objects.delete_prefix(self.objects.key("jobs", job_id) + "/")
        if files and outputs_elsewhere(job, self.workspace, self.settings.worker_id):
            # The pod that ran it holds the files: it deletes them when it hears of this (PostgreSQL).
            self.store.delete(job_id, purge_on=job.worker_id, paths=paths)
        else:
            if files:
                remove_job_files(self.workspace, job_id, paths)
            self.store.delete(job_id)
        self.notifier.notify(job_id)

    # -- waiting -------------------------------------------------------------------------

    def watch(self, job_id: str, *, poll_seconds: float = 1.0) -> AsyncIterator[Job]:
        """Yield the job now and after each change, ending with its terminal state."""
        return watch_job(self.store, self.notifier, job_id, poll_seconds=poll_seconds)

    async def wait(
        self, job_id: str, *, timeout: float | None = None, on_change: Callable[[Job], None] | None = None
    ) -> Job:
        """Wait until the job is terminal (or timeout), calling on_change at each change; return it."""
        return await wait_for_job(self.store, self.notifier, job_id, timeout=timeout, on_change=on_change)

    def health(self) -> dict[str, Any]:
        """The worker's health object (GPUs, slots, ai-toolkit, generation, disk, bundles, database, queue)."""
        return health_report(
            settings=self.settings,
            store=self.store,
            slots=self.scheduler.slots,
            workspace_root=self.workspace.root,
            generation=self.generation,
            bundles=self.bundles,
            storage=self.objects.status() if self.objects is not None else {"configured": False},
        )

    # -- artifacts -----------------------------------------------------------------------

    def find_artifact(self, job: Job, name: str) -> dict[str, Any] | None:
        """The job's artifact of this name as on disk now, if there is one (OutputsElsewhere: another pod's)."""
        self._require_outputs_here(job)
        return find_artifact(job, name, self.workspace)

    def current_artifacts(self, job: Job) -> builtins.list[dict[str, Any]]:
        """A job's artifacts as on disk now (OutputsElsewhere when they are on another pod's disk)."""
        self._require_outputs_here(job)
        return current_artifacts(job, self.workspace)

    def _require_outputs_here(self, job: Job) -> None:
        # With a bucket every artifact is there, whichever pod ran the job; without one, only its pod has them.
        if self.objects is None:
            require_outputs_here(job, self.workspace, self.settings.worker_id)
