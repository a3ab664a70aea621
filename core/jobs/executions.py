"""How each job type runs on a slot: a training through ai-toolkit, a generation on the warm worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from core.jobs.control import ControlDriver, Flag, JobControl, control_path, is_controllable
from core.jobs.lifecycle import JobLifecycle
from core.jobs.rows import Job, JobStatus
from core.settings import Settings
from core.storage.media import IMAGE_SUFFIXES
from core.storage.workspace import Workspace
from gpu.adopted import AdoptedTraining
from gpu.artifacts import Artifact, scan_training_output
from gpu.generation import GenerationRequest, WarmGenerator
from gpu.training import TrainingRun


@dataclass(frozen=True)
class ExecutionResult:
    """How a job's run ended."""

    status: JobStatus
    error: str | None = None
    exit_code: int | None = None


class Execution(Protocol):
    """A job running on a slot."""

    async def run(self) -> ExecutionResult:
        """Run to the end and say how it ended."""
        ...

    def stop(self, save: bool = False) -> None:
        """Ask the run to stop (a training saves a checkpoint first when save); run() then returns cancelled."""
        ...


def subprocess_env(settings: Settings, workspace: Workspace) -> dict[str, str]:
    """Extra environment for GPU subprocesses: secrets and the workspace's Hugging Face cache."""
    env = settings.subprocess_secrets()
    if "HF_HOME" not in os.environ and "HF_HUB_CACHE" not in os.environ:
        env["HF_HUB_CACHE"] = str(workspace.hf_cache)
    return env


class TrainerExecution:
    """An ai-toolkit trainer on a slot: started here, or adopted after a server restart."""

    def __init__(
        self,
        trainer: TrainingRun | AdoptedTraining,
        grace: float,
        control: JobControl | None = None,
        life: JobLifecycle | None = None,
        save_timeout: float = 300.0,
    ) -> None:
        self.trainer = trainer
        self.grace = grace
        self.driver = (
            ControlDriver(
                control,
                on_info=life.info,
                stop=lambda: trainer.request_stop(grace),
                save_root=trainer.save_root,
                job_name=trainer.job_name,
                save_timeout=save_timeout,
            )
            if control is not None and life is not None
            else None
        )

    @classmethod
    def launch(
        cls,
        *,
        job: Job,
        gpu: str | None,
        settings: Settings,
        workspace: Workspace,
        life: JobLifecycle,
        control: JobControl | None = None,
    ) -> TrainerExecution:
        """ai-toolkit's run.py on the job's config, on one GPU slot (reading its control table when given one)."""
        env = subprocess_env(settings, workspace)
        if control is not None:
            env["AITK_JOB_ID"] = control.job_id
        trainer = TrainingRun(
            python=settings.ai_toolkit_python,
            toolkit_dir=settings.ai_toolkit_dir or Path("/nonexistent-ai-toolkit"),
            config_path=workspace.root / job.config["config_path"],
            job_name=job.config["name"],
            save_root=workspace.root / job.config["save_root"],
            log_path=workspace.root / str(job.log_path),
            gpu=gpu,
            extra_env=env,
            on_start=lambda pid: life.started(pid=pid),
            on_progress=life.progress,
            on_artifacts=life.artifacts,
            progress_interval=settings.progress_interval_seconds,
        )
        return cls(trainer, settings.stop_grace_seconds, control, life, settings.save_timeout_seconds)

    @classmethod
    def adopt(cls, *, job: Job, settings: Settings, workspace: Workspace, life: JobLifecycle) -> TrainerExecution:
        """A trainer a previous server run started and that outlived it, watched through its pid and log."""
        trainer = AdoptedTraining(
            pid=int(job.pid or 0),
            log_path=workspace.root / str(job.log_path),
            job_name=job.config["name"],
            save_root=workspace.root / job.config["save_root"],
            on_progress=life.progress,
            on_artifacts=life.artifacts,
            progress_interval=settings.progress_interval_seconds,
        )
        path = control_path(job, workspace)
        control = JobControl(path, job.id) if is_controllable(job) and path.is_file() else None
        return cls(trainer, settings.stop_grace_seconds, control, life, settings.save_timeout_seconds)

    async def run(self) -> ExecutionResult:
        """Follow the trainer to its end (watching its status line) and map its outcome to a job status."""
        watcher = None
        if self.driver is not None:
            self.driver.bind(asyncio.get_running_loop())
            watcher = asyncio.ensure_future(self.driver.watch())
        try:
            outcome = await self.trainer.run()
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watcher
        if self.driver is not None:
            await self.driver.report()  # the trainer's last words: "Job stopped", "Training completed"
        return ExecutionResult(JobStatus(outcome.status), outcome.error, outcome.exit_code)

    def stop(self, save: bool = False) -> None:
        """SIGINT now and SIGKILL after the grace; with save (and a control table), a checkpoint first."""
        if self.driver is not None and (save or self._save_pending()):
            self.driver.save_then_stop()
        elif self.driver is None or not self.driver.stopping_after_save:
            # a plain stop (housekeeping repeats them) must not cut short a save already asked for
            self.trainer.request_stop(self.grace)

    def _save_pending(self) -> bool:
        """A save_now not yet taken: a cancel-with-save that reached another worker raised it for this stop."""
        if self.driver is None or self.driver.stopping_after_save:
            return False
        state = self.driver.control.read()
        return state is not None and state.save_now

    def request(self, flag: Flag) -> bool:
        """Raise save_now or sample_now; False when this trainer does not read a control table."""
        if self.driver is None:
            return False
        self.driver.request(flag)
        return True


class GenerationExecution:
    """One generation request on the slot's warm generator."""

    def __init__(
        self, *, generator: WarmGenerator, request: GenerationRequest, workspace: Workspace, life: JobLifecycle
    ):
        self.generator = generator
        self.request = request
        self.workspace = workspace
        self.life = life

    async def run(self) -> ExecutionResult:
        """Generate the images and record them as artifacts as they appear."""
        self.life.started(pid=None)
        outcome = await self.generator.generate(
            self.request, on_progress=self.life.progress, on_image=lambda _path: self._record_images()
        )
        self._record_images()
        return ExecutionResult(JobStatus(outcome.status), outcome.error)

    def stop(self, save: bool = False) -> None:
        """Stop at the next denoising step (a generation has nothing to save)."""
        self.generator.cancel()

    def _record_images(self) -> None:
        self.life.artifacts(scan_generated(self.request.output_dir))


def scan_generated(folder: Path) -> list[Artifact]:
    """Images and their JSON sidecars in a generation job's folder."""
    if not folder.is_dir():
        return []
    found = []
    for path in sorted(folder.iterdir(), key=lambda p: (p.stem.zfill(8), p.suffix)):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix in IMAGE_SUFFIXES:
            kind = "image"
        elif path.suffix == ".json":
            kind = "metadata"
        else:
            continue
        stat = path.stat()
        found.append(Artifact(name=path.name, kind=kind, path=path, size=stat.st_size, modified=stat.st_mtime))
    return found


def scan_training(job: Job, workspace: Workspace) -> list[Artifact]:
    """A training job's checkpoints, final LoRA, samples and config as found on disk now."""
    if not job.config.get("save_root"):
        return []
    return scan_training_output(workspace.root / job.config["save_root"], job.config["name"])
