"""How captioning runs on a slot: a caption job on the slot's warm captioner, and a training's autocaption phase."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.jobs.caption import captioning_request
from core.jobs.executions import ExecutionResult, TrainerExecution, subprocess_env
from core.jobs.lifecycle import JobLifecycle
from core.jobs.rows import Job, JobStatus
from core.jobs.scheduler import Slot
from core.jobs.store import JobStore
from core.settings import Settings
from core.storage.workspace import Workspace
from gpu.captioning import WarmCaptioner
from gpu.progress import Progress

# The caption worker is started with lorapod's source root as its working folder.
_SOURCE_ROOT = Path(__file__).resolve().parents[2]
PHASE_CAPTIONING = "captioning"
PHASE_TRAINING = "training"


def slot_captioner(slot: Slot, settings: Settings, workspace: Workspace) -> WarmCaptioner:
    """The slot's warm captioner, created (not yet started) when it has none."""
    if slot.captioner is None:
        slot.captioner = WarmCaptioner(
            python=settings.ai_toolkit_python,
            gpu=slot.gpu,
            log_path_for=lambda job_id: workspace.logs / f"{job_id}.log",
            extra_env=subprocess_env(settings, workspace),
            idle_seconds=settings.generation_idle_seconds,
            cwd=_SOURCE_ROOT,
        )
    return slot.captioner


async def release_captioner(slot: Slot) -> None:
    """Stop the slot's warm captioner: a training needs the whole GPU."""
    if slot.captioner is not None:
        await slot.captioner.shutdown()
        slot.captioner = None


class CaptionExecution:
    """Caption the images of the job's datasets that need it, on the slot's warm captioner."""

    def __init__(
        self,
        *,
        captioner: WarmCaptioner,
        job: Job,
        config: dict[str, Any],
        store: JobStore,
        workspace: Workspace,
        life: JobLifecycle,
    ) -> None:
        self.captioner = captioner
        self.job = job
        self.config = config  # the captioning config: datasets, model, prefix, suffix, ...
        self.store = store
        self.workspace = workspace
        self.life = life
        self.stopped = False

    async def run(self) -> ExecutionResult:
        """A caption job: start, caption, end."""
        self.life.started(pid=None)
        try:
            return await self.caption()
        finally:
            self.life.artifacts([])  # its log

    async def caption(self) -> ExecutionResult:
        """Caption what needs it now; progress counts images, the summary lands in the job's config."""
        request = captioning_request(self.job.id, self.config, self.workspace)
        total = len(request.images)
        self._summary(images=total, written=0, skipped=0, unreadable=[])
        self.life.progress(Progress(step=0, total=total))
        self.life.flush_progress()
        if self.stopped:
            return ExecutionResult(JobStatus.cancelled)
        if not request.images:  # nothing to caption: no model is loaded at all
            return ExecutionResult(JobStatus.completed)
        written: list[Path] = []
        outcome = await self.captioner.caption(
            request, on_progress=self.life.progress, on_caption=lambda path, _text: written.append(path)
        )
        self.life.flush_progress()
        unreadable = [self.workspace.relative(p) for p in outcome.unreadable]
        self._summary(images=total, written=len(outcome.written), skipped=outcome.skipped, unreadable=unreadable)
        return ExecutionResult(JobStatus(outcome.status), outcome.error)

    def stop(self, save: bool = False) -> None:
        """Stop before the next image; captions written so far stay (there is no checkpoint to save)."""
        self.stopped = True
        self.captioner.cancel()

    def _summary(self, **counts: int | list[str]) -> None:
        record = {"model": self.config["model"], **counts}
        config = {**self.store.get(self.job.id).config, "captioning": record}
        self.store.update(self.job.id, config=config)


class AutocaptionTraining:
    """A training whose missing captions are written first, as a visible phase of the same job."""

    def __init__(
        self,
        *,
        slot: Slot,
        captioning: CaptionExecution,
        launch: Callable[[], TrainerExecution],
        store: JobStore,
        life: JobLifecycle,
    ) -> None:
        self.slot = slot
        self.captioning = captioning
        self.launch = launch
        self.store = store
        self.life = life
        self.trainer: TrainerExecution | None = None
        self.stopped = False

    async def run(self) -> ExecutionResult:
        """Caption, give the GPU up, then train."""
        job = self.captioning.job
        self._phase(PHASE_CAPTIONING)
        result = await self.captioning.caption()
        if result.status != JobStatus.completed:
            error = f"autocaption: {result.error}" if result.error else None
            return ExecutionResult(result.status, error)
        await release_captioner(self.slot)
        if self.stopped:
            return ExecutionResult(JobStatus.cancelled)
        self._phase(PHASE_TRAINING)
        self.store.update(job.id, step=0, total_steps=job.total_steps, rate=None, eta_seconds=None)
        self.trainer = self.launch()
        return await self.trainer.run()

    def stop(self, save: bool = False) -> None:
        """Stop whichever phase runs (the training phase saves a checkpoint first when save)."""
        self.stopped = True
        if self.trainer is not None:
            self.trainer.stop(save)
        else:
            self.captioning.stop()

    def _phase(self, phase: str) -> None:
        job_id = self.captioning.job.id
        self.store.update(job_id, config={**self.store.get(job_id).config, "phase": phase})
        self.life.started(pid=None)  # tells waiters; the trainer reports its pid when it starts
