"""The job runner: takes a job the scheduler gave a slot, runs it to the end, and records how it ended."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.errors import LorapodError, is_disk_full
from core.jobs.artifacts import side_artifacts
from core.jobs.caption_run import AutocaptionTraining, CaptionExecution, release_captioner, slot_captioner
from core.jobs.control import Flag, JobControl, control_path, controlled_config, is_controllable
from core.jobs.executions import (
    Execution,
    ExecutionResult,
    GenerationExecution,
    TrainerExecution,
    scan_training,
    subprocess_env,
)
from core.jobs.generation import generation_request
from core.jobs.lifecycle import JobLifecycle
from core.jobs.metrics_history import LOSS_LOG_NAME, MetricsRecorder, MetricsStore, uses_loss_log
from core.jobs.notify import Notifier
from core.jobs.rows import Job, JobStatus, JobType
from core.jobs.scheduler import Slot
from core.jobs.store import JobStore
from core.log_context import job_context
from core.metrics import ServiceMetrics
from core.settings import Settings
from core.storage.objects import ObjectStore
from core.storage.workspace import Workspace, atomic_write_text
from core.training.yaml_loader import dump_yaml
from gpu.generation import WarmGenerator

log = logging.getLogger("lorapod.jobs")

# The generation worker is started with lorapod's source root as its working folder.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


class JobRunner:
    """Runs jobs on slots (called by the scheduler on the service's loop) and reaches the ones running here."""

    def __init__(
        self,
        *,
        settings: Settings,
        workspace: Workspace,
        store: JobStore,
        notifier: Notifier,
        metrics: ServiceMetrics,
        objects: ObjectStore | None = None,
        before_training: Callable[[Job], None] | None = None,
    ) -> None:
        self.settings = settings
        self.workspace = workspace
        self.store = store
        self.notifier = notifier
        self.metrics = metrics
        self.objects = objects  # the bucket artifacts go to as they appear, when one is configured
        self.before_training = before_training  # blocking preparation (datasets from the bucket), run in a thread
        self._executions: dict[str, Execution] = {}

    def stop(self, job_id: str, *, save: bool = False) -> bool:
        """Ask the job's execution on this server to stop (saving first); False when it does not run here."""
        execution = self._executions.get(job_id)
        if execution is None:
            return False
        execution.stop(save=save)
        return True

    def running_ids(self) -> list[str]:
        """Ids of the jobs running on this server now."""
        return list(self._executions)

    def request(self, job_id: str, flag: Flag) -> bool:
        """Raise save_now or sample_now on the job's trainer; False when it does not run here under control."""
        execution = self._executions.get(job_id)
        return isinstance(execution, TrainerExecution) and execution.request(flag)

    async def run(self, job: Job, slot: Slot, adopted: bool = False) -> None:
        """Run one job on its slot to the end; any failure inside lorapod fails the job, never the server."""
        began = time.monotonic()
        life = JobLifecycle(
            store=self.store,
            workspace=self.workspace,
            job_id=job.id,
            notify=self.notifier.notify,
            progress_interval=self.settings.progress_interval_seconds,
            extra_artifacts=lambda: side_artifacts(job, self.workspace),
            # An adopted trainer started long before this process saw it: its first progress says nothing.
            on_first_progress=None
            if adopted
            else lambda: self.metrics.first_progress.labels(job.type).observe(time.monotonic() - began),
            loss_history=self._loss_history(job),
            objects=self.objects,
        )
        job_context.set(job.id)  # this task's log lines carry the job id
        if not adopted:
            self.metrics.job_started(job.type, job.created_at)
        log.info("job %s %s on slot %s", job.id, "adopted" if adopted else "started", slot.label)
        self.notifier.notify(job.id)
        result: ExecutionResult | None = None
        try:
            execution = (
                TrainerExecution.adopt(job=job, settings=self.settings, workspace=self.workspace, life=life)
                if adopted
                else await self._prepare(job, slot, life)
            )
            self._executions[job.id] = execution  # from here on, a cancel reaches it directly
            result = await execution.run()
            if job.type == JobType.train:
                life.artifacts(scan_training(job, self.workspace))
            status, error = await life.archive(result.status, result.error, result.exit_code)
            final = life.finished(status, error=error, exit_code=result.exit_code)
        except Exception as exc:
            if is_disk_full(exc):
                log.error("job %s: the disk is full", job.id)
                final = life.finished(
                    JobStatus.failed, error=f"the disk is full: {exc}; free space, then resume or retry"
                )
            else:
                log.exception("job %s failed inside lorapod", job.id)
                reason = exc.message if isinstance(exc, LorapodError) else f"internal error: {exc}"
                final = life.finished(JobStatus.failed, error=reason)
        finally:
            life.close()
            self._executions.pop(job.id, None)
        log.info("job %s ended: %s", job.id, final.status if final else "already ended")
        self.metrics.run_ended(
            job.type,
            (final.status, final.started_at) if final else None,
            (result.status, result.exit_code) if result else None,
        )

    def _loss_history(self, job: Job) -> MetricsRecorder | None:
        """The loss history of a training (read from ai-toolkit's loss log when its config writes one)."""
        if job.type != JobType.train:
            return None
        save_root = job.config.get("save_root")
        loss_log = self.workspace.root / save_root / LOSS_LOG_NAME if save_root and uses_loss_log(job) else None
        return MetricsRecorder(MetricsStore(self.store.engine), job.id, loss_log)

    async def _prepare(self, job: Job, slot: Slot, life: JobLifecycle) -> Execution:
        if job.type == JobType.caption:
            return self._captioning(job, job.config, slot, life)
        if job.type == JobType.train:
            if slot.generator is not None:  # a training needs the whole GPU: the warm generator goes
                await slot.generator.shutdown()
                slot.generator = None
            if self.before_training is not None:
                await asyncio.to_thread(self.before_training, job)
            # The launched config comes from the database, so a queued job survives a lost output folder.
            config = job.config["ai_toolkit"]
            control = None
            if is_controllable(job):
                control = JobControl(control_path(job, self.workspace), job.id)
                control.reset()  # stale flags from an earlier attempt would stop this one
                config = controlled_config(config, control.path)
            atomic_write_text(self.workspace.root / job.config["config_path"], dump_yaml(config), durable=False)

            def launch() -> TrainerExecution:
                return TrainerExecution.launch(
                    job=job, gpu=slot.gpu, settings=self.settings, workspace=self.workspace, life=life, control=control
                )

            if job.config.get("autocaption"):  # the captioner gives the GPU up once the captions are written
                captioning = self._captioning(job, job.config["autocaption"], slot, life)
                return AutocaptionTraining(slot=slot, captioning=captioning, launch=launch, store=self.store, life=life)
            await release_captioner(slot)
            return launch()
        if slot.generator is None:
            slot.generator = WarmGenerator(
                python=self.settings.ai_toolkit_python,
                gpu=slot.gpu,
                log_path_for=lambda job_id: self.workspace.logs / f"{job_id}.log",
                extra_env=subprocess_env(self.settings, self.workspace),
                idle_seconds=self.settings.generation_idle_seconds,
                cwd=_SOURCE_ROOT,
            )
        return GenerationExecution(
            generator=slot.generator,
            request=generation_request(job, self.workspace),
            workspace=self.workspace,
            life=life,
        )

    def _captioning(self, job: Job, config: dict[str, Any], slot: Slot, life: JobLifecycle) -> CaptionExecution:
        captioner = slot_captioner(slot, self.settings, self.workspace)
        return CaptionExecution(
            captioner=captioner, job=job, config=config, store=self.store, workspace=self.workspace, life=life
        )
