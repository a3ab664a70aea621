"""The REST view of a job: the core's job view plus artifact URLs and links, and the examples /docs shows."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Request

from core.contract.views import job_view
from core.jobs.rows import Job

JobId = Annotated[str, Path(min_length=1, max_length=64, description="The job's id, e.g. `train_ab12cd34ef56`.")]


JOB_EXAMPLE: dict[str, Any] = {
    "id": "train_ab12cd34ef56",
    "process_id": "train_ab12cd34ef56",
    "type": "train",
    "status": "running",
    "name": "my_lora",
    "dataset": "my_dataset",
    "base_model": "sd15",
    "progress": {"step": 250, "total_steps": 1000, "percent": 25.0, "rate": 1.9, "eta_seconds": 394.7, "loss": 0.21},
    "error": None,
    "exit_code": None,
    "gpu": "0",
    "worker_id": "pod-1",
    "cancel_requested": False,
    "created_at": "2025-01-01T12:00:00Z",
    "started_at": "2025-01-01T12:00:02Z",
    "finished_at": None,
    "updated_at": "2025-01-01T12:02:13Z",
    "params": {"training_name": "my_dataset", "trigger_word": "sks", "base_model": "sd15", "steps": 1000},
    "warnings": [],
    "output_dir": "output/train_ab12cd34ef56",
    "log_path": "logs/train_ab12cd34ef56.log",
    "artifacts": [
        {
            "name": "my_lora_000000250.safetensors",
            "kind": "checkpoint",
            "path": "output/train_ab12cd34ef56/my_lora/my_lora_000000250.safetensors",
            "size": 19764928,
            "step": 250,
            "modified": "2025-01-01T12:02:12+00:00",
            "url": "/jobs/train_ab12cd34ef56/artifacts/my_lora_000000250.safetensors",
        }
    ],
    "links": {
        "self": "/jobs/train_ab12cd34ef56",
        "cancel": "/jobs/train_ab12cd34ef56/cancel",
        "events": "/jobs/train_ab12cd34ef56/events",
        "logs": "/jobs/train_ab12cd34ef56/logs",
        "artifacts": "/jobs/train_ab12cd34ef56/artifacts",
    },
}


def json_example(description: str, example: Any) -> dict[str, Any]:
    """An OpenAPI response entry with a JSON example."""
    return {"description": description, "content": {"application/json": {"example": example}}}


def job_links(job_id: str, prefix: str = "") -> dict[str, str]:
    """Where to follow, cancel and download a job."""
    base = f"{prefix}/jobs/{quote(job_id, safe='')}"
    return {
        "self": base,
        "cancel": f"{base}/cancel",
        "events": f"{base}/events",
        "logs": f"{base}/logs",
        "artifacts": f"{base}/artifacts",
        "save": f"{base}/save",
        "sample": f"{base}/sample",
        "resume": f"{base}/resume",
        "retry": f"{base}/retry",
    }


def artifact_out(job: Job, artifact: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """An artifact record plus its download URL."""
    name = quote(str(artifact.get("name", "")), safe="/")
    return {**artifact, "url": f"{prefix}/jobs/{quote(job.id, safe='')}/artifacts/{name}"}


def job_out(job: Job, prefix: str = "") -> dict[str, Any]:
    """The public job view with artifact URLs and links."""
    view = job_view(job)
    view["artifacts"] = [artifact_out(job, a, prefix) for a in job.artifacts]
    view["links"] = job_links(job.id, prefix)
    return view


def url_prefix(request: Request) -> str:
    """The app's mount point, so links work behind a proxy that strips a prefix."""
    return str(request.scope.get("root_path", "")).rstrip("/")
