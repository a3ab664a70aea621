"""The job runner: takes a job the scheduler gave a slot, runs it to the end, and records how it ended."""

from __future__ import annotations

import logging
from pathlib import Path

from core.errors import is_disk_full
from core.jobs.artifacts import side_artifacts
from core.jobs.control import Flag, JobControl, control_path, controlled_config, is_controllable
from core.jobs.executions import Execution, GenerationExecution, TrainerExecution, scan_training, subprocess_env
from core.jobs.generation import generation_request
from core.jobs.lifecycle import JobLifecycle
from core.jobs.notify import Notifier
from core.jobs.rows import Job, JobStatus, JobType
from core.jobs.scheduler import Slot
from core.jobs.store import JobStore
from core.settings import Settings
from core.storage.workspace import Workspace, atomic_write_text
from core.training.yaml_loader import dump_yaml
from gpu.generation import WarmGenerator

log = logging.getLogger("lorapod.jobs")

# The generation worker is started with lorapod's source root as its working folder.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]


class JobRunner:
    """Runs jobs on slots (called by the scheduler on the service's loop) and reaches the ones running here."""

    def __init__(self, *, settings: Settings, workspace: Workspace, store: JobStore, notifier: Notifier) -> None:
        self.settings = settings
        self.workspace = workspace
        self.store = store
        self.notifier = notifier
        self._executions: dict[str, Execution] = {}

    def stop(self, job_id: str, *, save: bool = False) -> bool:
        """Ask the job's execution on this server to stop (saving first); False when it does not run here."""
        execution = self._executions.get(job_id)
        if execution is None:
            return False
        execution.stop(save=save)
        return True

    def request(self, job_id: str, flag: Flag) -> bool:
        """Raise save_now or sample_now on the job's trainer; False when it does not run here under control."""
        execution = self._executions.get(job_id)
        return isinstance(execution, TrainerExecution) and execution.request(flag)

    async def run(self, job: Job, slot: Slot, adopted: bool = False) -> None:
        """Run one job on its slot to the end; any failure inside lorapod fails the job, never the server."""
        life = JobLifecycle(
            store=self.store,
            workspace=self.workspace,
            job_id=job.id,
            notify=self.notifier.notify,
            progress_interval=self.settings.progress_interval_seconds,
            extra_artifacts=lambda: side_artifacts(job, self.workspace),
        )
        self.notifier.notify(job.id)
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
            life.finished(result.status, error=result.error, exit_code=result.exit_code)
        except Exception as exc:
            if is_disk_full(exc):
                log.error("job %s: the disk is full", job.id)
                life.finished(JobStatus.failed, error=f"the disk is full: {exc}; free space, then resume or retry")
            else:
                log.exception("job %s failed inside lorapod", job.id)
                life.finished(JobStatus.failed, error=f"internal error: {exc}")
        finally:
            self._executions.pop(job.id, None)

    async def _prepare(self, job: Job, slot: Slot, life: JobLifecycle) -> Execution:
        if job.type == JobType.train:
            if slot.generator is not None:  # a training needs the whole GPU: the warm generator goes
                await slot.generator.shutdown()
                slot.generator = None
            # The launched config comes from the database, so a queued job survives a lost output folder.
            config = job.config["ai_toolkit"]
            control = None
            if is_controllable(job):
                control = JobControl(control_path(job, self.workspace), job.id)
                control.reset()  # stale flags from an earlier attempt would stop this one
                config = controlled_config(config, control.path)
            atomic_write_text(self.workspace.root / job.config["config_path"], dump_yaml(config), durable=False)
            return TrainerExecution.launch(
                job=job, gpu=slot.gpu, settings=self.settings, workspace=self.workspace, life=life, control=control
            )
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
