"""The REST view of a job: the core's job view plus artifact URLs and links (shapes in app/schemas/jobs.py)."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Path, Request
from starlette.datastructures import State

from app.schemas.encoding import json_encoder
from app.schemas.jobs import Job as JobOut
from core.contract.views import job_view
from core.jobs.rows import Job
from core.jobs.service import JobService
from core.jobs.store import JobStore

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


# A job view as the JSON FastAPI writes for a `response_model=JobOut` route.
job_json = json_encoder(JobOut)


class JobBodies:
    """The JSON of `GET /jobs/{job_id}` by job, encoded again only when the job's row has changed.

    The body is a function of the row (and the URL prefix) alone, and every request reads the row first: a body
    is reused only for a row equal in every column to the one it was made from, so any pod's write shows at once.
    """

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._entries: dict[tuple[str, str], tuple[tuple[Any, ...], bytes]] = {}

    def body(self, store: JobStore, job_id: str, row: tuple[Any, ...], prefix: str) -> bytes:
        """The job's JSON for the row just read."""
        key = (job_id, prefix)
        entry = self._entries.pop(key, None)
        if entry is None or entry[0] != row:
            entry = (row, job_json(job_out(store.job_from_row(row), prefix)))
        self._entries[key] = entry  # newest last, so the first entry is the one to drop
        if len(self._entries) > self.size:
            del self._entries[next(iter(self._entries))]
        return entry[1]


async def stored_job_body(state: State, job_id: str, prefix: str) -> bytes | None:
    """The JSON of a job this server's database holds (one point read), or None when it holds no such job."""
    service: JobService = state.service
    row = await service.store.read_row(job_id)
    if row is None:
        return None
    bodies: JobBodies = state.job_bodies
    return bodies.body(service.store, job_id, row, prefix)


def url_prefix(request: Request) -> str:
    """The app's mount point, so links work behind a proxy that strips a prefix."""
    return str(request.scope.get("root_path", "")).rstrip("/")
