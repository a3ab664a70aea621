"""The rows of new jobs: a training, a caption job or a generation, built from a checked request before it is queued."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import Unavailable
from core.jobs.caption import CaptionOptions, CaptionParams, caption_config, check_dataset
from core.jobs.generation import GenerateParams, generation_config
from core.jobs.requests import WEBHOOK_FIELDS
from core.jobs.rows import Job, JobStatus, JobType, new_job_id
from core.settings import Settings
from core.storage.workspace import Workspace
from core.training.builder import TrainingPlan
from gpu.generation import GenerationRequest


@dataclass(frozen=True)
class JobKeys:
    """What every new job carries besides its work: its idempotency key, the request's fingerprint, its webhook."""

    idempotency_key: str | None = None
    request_hash: str | None = None
    webhook: dict[str, Any] | None = None

    def fields(self) -> dict[str, Any]:
        """The row's columns for these keys (a fingerprint is kept only with a key to compare it against)."""
        return {
            "idempotency_key": self.idempotency_key,
            "request_hash": self.request_hash if self.idempotency_key else None,
            "webhook": self.webhook,
        }


def require_toolkit(settings: Settings) -> None:
    """Unavailable (503) unless AI_TOOLKIT_DIR holds ai-toolkit's run.py."""
    toolkit = settings.ai_toolkit_dir
    if toolkit is None:
        raise Unavailable("ai-toolkit is not configured: set AI_TOOLKIT_DIR to the folder holding its run.py")
    if not (Path(toolkit) / "run.py").is_file():
        raise Unavailable(f"ai-toolkit's run.py was not found in AI_TOOLKIT_DIR ({toolkit})")


def training_row(
    job_id: str,
    plan: TrainingPlan,
    params: dict[str, Any],
    workspace: Workspace,
    keys: JobKeys,
    autocaption: CaptionOptions | None = None,
) -> Job:
    """A queued training of plan; the ai-toolkit config is stored on the row and written when it starts."""
    job_dir = workspace.output / job_id
    config_path = job_dir / "job_config.yaml"  # written when the job starts, from the stored config
    extra: dict[str, Any] = {}
    if autocaption is not None:
        # ai-toolkit puts the training's trigger word into captions itself, so none is written here.
        extra["autocaption"] = caption_config(
            autocaption, plan.datasets, workspace, overwrite=False, trigger_word=None, model_field="autocaption.model"
        )
        params = {**params, "autocaption": autocaption.model_dump(mode="json")}
    return Job(
        id=job_id,
        type=JobType.train,
        status=JobStatus.queued,
        name=plan.name,
        dataset=params.get("training_name") or _dataset_name(plan, workspace),
        base_model=plan.base_model,
        params=params,
        config={
            "name": plan.name,
            "save_root": workspace.relative(plan.save_root),
            "config_path": workspace.relative(config_path),
            "warnings": plan.warnings,
            "ai_toolkit": plan.config,
            **extra,
        },
        total_steps=plan.total_steps,
        log_path=workspace.relative(workspace.logs / f"{job_id}.log"),
        output_dir=workspace.relative(job_dir),
        **keys.fields(),
    )


def caption_row(params: CaptionParams, workspace: Workspace, keys: JobKeys) -> Job:
    """A queued caption job on a dataset that exists and holds images."""
    folder = check_dataset(workspace, params.training_name)
    config = caption_config(params, [folder], workspace, overwrite=params.overwrite, trigger_word=params.trigger_word)
    job_id = new_job_id(JobType.caption)
    return Job(
        id=job_id,
        type=JobType.caption,
        status=JobStatus.queued,
        name=f"caption {params.training_name}",
        dataset=params.training_name,
        base_model=config["model"],
        params=params.model_dump(mode="json", exclude={"type", *WEBHOOK_FIELDS}),
        config=config,
        log_path=workspace.relative(workspace.logs / f"{job_id}.log"),
        **keys.fields(),
    )


def generation_row(params: GenerateParams, request: GenerationRequest, workspace: Workspace, keys: JobKeys) -> Job:
    """A queued generation of a resolved request."""
    return Job(
        id=request.job_id,
        type=JobType.generate,
        status=JobStatus.queued,
        name=(request.prompts[0][:120] if request.prompts else request.job_id),
        base_model=request.base_model,
        params=params.model_dump(mode="json"),
        config=generation_config(request, workspace),
        total_steps=request.steps * request.num_images * len(request.prompts),
        log_path=workspace.relative(workspace.logs / f"{request.job_id}.log"),
        output_dir=workspace.relative(request.output_dir),
        **keys.fields(),
    )


def _dataset_name(plan: TrainingPlan, workspace: Workspace) -> str | None:
    if not plan.datasets:
        return None
    first = plan.datasets[0]
    return first.name if first.is_relative_to(workspace.training_data) else workspace.relative(first)
