"""Jobs as the REST routes show them: the job, its progress, artifacts and links, and a page of jobs."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.schemas import Schema, examples
from core.jobs.rows import JobStatus, JobType

ARTIFACT_EXAMPLE: dict[str, Any] = {
    "name": "my_lora_000000250.safetensors",
    "kind": "checkpoint",
    "path": "output/train_ab12cd34ef56/my_lora/my_lora_000000250.safetensors",
    "size": 19764928,
    "step": 250,
    "modified": "2025-01-01T12:02:12+00:00",
    "url": "/jobs/train_ab12cd34ef56/artifacts/my_lora_000000250.safetensors",
}
PROGRESS_EXAMPLE: dict[str, Any] = {
    "step": 250,
    "total_steps": 1000,
    "percent": 25.0,
    "rate": 1.9,
    "eta_seconds": 394.7,
    "loss": 0.21,
}
LINKS_EXAMPLE: dict[str, str] = {
    "self": "/jobs/train_ab12cd34ef56",
    "cancel": "/jobs/train_ab12cd34ef56/cancel",
    "events": "/jobs/train_ab12cd34ef56/events",
    "logs": "/jobs/train_ab12cd34ef56/logs",
    "artifacts": "/jobs/train_ab12cd34ef56/artifacts",
}
JOB_EXAMPLE: dict[str, Any] = {
    "id": "train_ab12cd34ef56",
    "process_id": "train_ab12cd34ef56",
    "type": "train",
    "status": "running",
    "name": "my_lora",
    "dataset": "my_dataset",
    "base_model": "sd15",
    "progress": PROGRESS_EXAMPLE,
    "error": None,
    "exit_code": None,
    "gpu": "0",
    "worker_id": "pod-1",
    "outputs_on": "pod-1",
    "cancel_requested": False,
    "created_at": "2025-01-01T12:00:00Z",
    "started_at": "2025-01-01T12:00:02Z",
    "finished_at": None,
    "updated_at": "2025-01-01T12:02:13Z",
    "params": {"training_name": "my_dataset", "trigger_word": "sks", "base_model": "sd15", "steps": 1000},
    "warnings": [],
    "output_dir": "output/train_ab12cd34ef56",
    "log_path": "logs/train_ab12cd34ef56.log",
    "artifacts": [ARTIFACT_EXAMPLE],
    "links": LINKS_EXAMPLE,
}


class Artifact(Schema):
    """One output file of a job, with its download URL."""

    model_config = examples(ARTIFACT_EXAMPLE)

    name: str = Field(description="Unique within the job, relative to its output folder; the download name.")
    kind: str = Field(description="`lora` (final), `checkpoint`, `sample`, `image`, `config`, `metadata` or `log`.")
    path: str = Field(description="The file, relative to the workspace.")
    size: int = Field(description="Bytes.")
    step: int | None = Field(default=None, description="The training step it was saved at, when known.")
    modified: str | None = Field(default=None, description="Last modification, ISO 8601 (UTC).")
    url: str = Field(description="Where to download it (`GET /jobs/{job_id}/artifacts/{name}`).")


class Progress(Schema):
    """How far a job is: step, total, percent, rate, ETA and the last loss."""

    model_config = examples(PROGRESS_EXAMPLE)

    step: int = Field(description="Steps done.")
    total_steps: int | None = Field(default=None, description="Steps in all, once known.")
    percent: float | None = Field(default=None, description="0 to 100.")
    rate: float | None = Field(default=None, description="Steps per second.")
    eta_seconds: float | None = Field(default=None, description="Estimated seconds left.")
    loss: float | None = Field(default=None, description="The last loss the trainer reported.")
    info: str | None = Field(default=None, description="The trainer's own status line, e.g. `Saving model`.")


class JobLinks(Schema):
    """Where to follow, cancel and download a job."""

    model_config = examples(LINKS_EXAMPLE)

    self_: str = Field(alias="self", description="The job (`GET /jobs/{job_id}`).")
    cancel: str = Field(description="`POST` here to cancel it.")
    events: str = Field(description="Its live Server-Sent Events.")
    logs: str = Field(description="Its log as text.")
    artifacts: str = Field(description="Its artifacts.")
    save: str | None = Field(default=None, description="`POST` here to save a checkpoint now (a running training).")
    sample: str | None = Field(default=None, description="`POST` here to render the sample prompts now.")
    resume: str | None = Field(default=None, description="`POST` here to continue a failed or cancelled training.")
    retry: str | None = Field(default=None, description="`POST` here to start a failed job again from scratch.")


class Job(Schema):
    """A training or a generation: status, progress, error, artifacts and links."""

    model_config = examples(JOB_EXAMPLE)

    id: str = Field(description="The job's id, e.g. `train_ab12cd34ef56` or `gen_ab12cd34ef56`.")
    process_id: str = Field(description="The same id, under the name the RunPod contract uses.")
    type: JobType
    status: JobStatus
    name: str = Field(description="The training's (or generation's) name.")
    dataset: str | None = Field(default=None, description="The dataset a training reads.")
    base_model: str | None = None
    progress: Progress
    error: str | None = Field(default=None, description="Why a failed job failed.")
    exit_code: int | None = Field(default=None, description="The trainer's exit code once it has ended.")
    gpu: str | None = Field(default=None, description="The GPU slot it runs (or ran) on.")
    worker_id: str | None = Field(default=None, description="The server that runs it.")
    outputs_on: str | None = Field(
        default=None, description="The pod whose disk holds its outputs (downloads elsewhere answer 409 naming it)."
    )
    cancel_requested: bool = False
    created_at: str | None = Field(default=None, description="ISO 8601 (UTC).")
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="The request's parameters, as given.")
    warnings: list[str] = Field(default_factory=list, description="What lorapod adjusted in the config, and why.")
    captioning: dict[str, Any] | None = Field(
        default=None,
        description="A caption job's (or an autocaption phase's) `{model, images, written, skipped, unreadable}`.",
    )
    phase: str | None = Field(
        default=None, description="`captioning`, then `training`, while a training with `autocaption` runs."
    )
    output_dir: str | None = Field(default=None, description="Its output folder, relative to the workspace.")
    log_path: str | None = Field(default=None, description="Its log, relative to the workspace.")
    artifacts: list[Artifact] = Field(default_factory=list)
    resumed_from: str | None = Field(default=None, description="The attempt this one resumes.")
    retried_from: str | None = Field(default=None, description="The job this one retries from scratch.")
    resumable_from_step: int | None = Field(
        default=None, description="The step a resume would continue from (a failed or cancelled training)."
    )
    webhook: dict[str, Any] | None = Field(
        default=None, description="Its webhook: URL, whether progress is sent, delivery state and every attempt."
    )
    links: JobLinks


class JobPage(Schema):
    """One page of jobs, newest first, and the cursor of the next page (null on the last)."""

    model_config = examples({"data": [JOB_EXAMPLE], "next_cursor": "WyIyMDI1LTAxLTAxVDEy"})

    data: list[Job]
    next_cursor: str | None = Field(default=None, description="Pass it back as `cursor` for the next page.")


class ArtifactList(Schema):
    """A job's artifacts as on disk now."""

    model_config = examples({"data": [ARTIFACT_EXAMPLE]})

    data: list[Artifact]


LOSS_HISTORY_EXAMPLE: dict[str, Any] = {
    "process_id": "train_ab12cd34ef56",
    "phase": "training",
    "stride": 1,
    "points": [{"step": 1, "loss": 0.412, "lr": 0.0001}, {"step": 2, "loss": 0.398, "lr": 0.0001}],
}


class LossPoint(Schema):
    """The loss (and learning rate) at one step."""

    step: int
    loss: float | None = None
    lr: float | None = None


class LossHistory(Schema):
    """A training's loss history, downsampled to at most 1000 points `stride` steps apart."""

    model_config = examples(LOSS_HISTORY_EXAMPLE)

    process_id: str
    phase: str | None = Field(
        description="`queued`, `starting`, `training`, `sampling`, `saving`, or the final status."
    )
    stride: int = Field(description="Steps between two kept points.")
    points: list[LossPoint]
