"""The REST view of a job: the core's job view plus artifact URLs and links (shapes in app/schemas/jobs.py)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Path, Request

from core.contract.views import job_view
from core.jobs.rows import Job

JobId = Annotated[str, Path(min_length=1, max_length=64, description="The job's id, e.g. `train_ab12cd34ef56`.")]


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
