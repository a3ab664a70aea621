"""/jobs/{id} outputs: the log, the live event stream, the artifacts and their downloads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse

from app.deps import ServiceDep
from app.errors import error_responses
from app.routes.files import DOWNLOAD_RESPONSES, file_response
from app.routes.job_views import JobId, artifact_out, job_out, url_prefix
from app.schemas.jobs import ArtifactList, LossHistory
from app.sse import SSE_HEADERS, EventCursor, JobFeed
from core.contract.object_downloads import url_answer
from core.errors import NotFound
from core.jobs.metrics_history import MetricsStore, metrics_view
from core.storage.logs import MAX_TAIL_LINES, read_log

router = APIRouter(tags=["jobs"])


@router.get(
    "/jobs/{job_id}/logs",
    summary="Read a job's log",
    description=(
        "The trainer's output as plain text, with progress-bar redraws (`\\r`) collapsed to their last "
        "state. `tail=N` gives the last N lines. For incremental reads pass the `X-Next-Offset` of the "
        "previous answer as `offset`: you get the lines completed since, never a line twice (while the job "
        "runs, a line still being drawn is held back until it ends)."
    ),
    response_class=PlainTextResponse,
    responses={
        200: {
            "description": "Log text.",
            "content": {"text/plain": {"example": "Running 1 job\nmy_lora: 100%|##########| 10/10 [00:02<00:00]\n"}},
            "headers": {
                "X-Next-Offset": {"description": "Byte offset to read from next.", "schema": {"type": "integer"}},
                "X-Job-Status": {
                    "description": "The job's status at the time of the read.",
                    "schema": {"type": "string"},
                },
            },
        },
        **error_responses(401, 404, 422, fields=("job_id", "offset", "tail")),
    },
)
def get_job_logs(
    service: ServiceDep,
    job_id: JobId,
    offset: Annotated[int | None, Query(ge=0, le=2**62, description="Byte offset to read from.")] = None,
    tail: Annotated[int | None, Query(ge=1, le=MAX_TAIL_LINES, description="Only the last N lines.")] = None,
) -> PlainTextResponse:
    """Read a job's log."""
    job = service.get(job_id)
    if not job.log_path:
        text, next_offset = "", 0
    else:
        path = service.workspace.resolve(job.log_path, field="log_path")
        text, next_offset = read_log(path, offset, tail, complete_only=offset is not None and not job.terminal)
    return PlainTextResponse(text, headers={"X-Next-Offset": str(next_offset), "X-Job-Status": job.status})


@router.get(
    "/jobs/{job_id}/events",
    summary="Follow a job live (Server-Sent Events)",
    description=(
        "A `text/event-stream` of the job's life. Events, each with JSON data:\n\n"
        "- `status`: the whole job (as `GET /jobs/{id}`); first a snapshot on connect, then at every status "
        "change;\n"
        "- `progress`: step, total, percent, rate, ETA and loss (at most every half second);\n"
        '- `metrics` (trainings): `{"phase": ..., "points": [{step, loss, lr}, ...]}`, the loss points not sent '
        "yet (the whole series first) and the trainer's phase, as `GET /jobs/{id}/metrics`;\n"
        "- `artifact`: a new checkpoint, sample or LoRA, with its download `url`;\n"
        '- `log`: `{"lines": [...]}`, new log lines, bar redraws collapsed;\n'
        "- `end`: `{id, status, error}` once the job has finished; the stream then closes;\n"
        "- `shutdown`: `{id, status, reason}` when the server stops (SIGTERM); the stream then closes and the "
        "job keeps running: reconnect to the next server with `Last-Event-ID`.\n\n"
        "Reconnect with the `Last-Event-ID` header (or `last_event_id` query) to resume: you get a fresh "
        "snapshot and the log from where you left it, no line twice. `curl -N` shows it live."
    ),
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The event stream.",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": 'id: 1-0\nevent: status\ndata: {"id":"train_ab12cd34ef56","status":"running"}\n\n'
                    'id: 2-812\nevent: log\ndata: {"lines":["Running 1 job"]}\n\n'
                    'id: 3-812\nevent: progress\ndata: {"status":"running","step":5,"total_steps":10}\n\n'
                    'id: 9-2301\nevent: end\ndata: {"id":"train_ab12cd34ef56","status":"completed","error":null}'
                    "\n\n",
                }
            },
        },
        **error_responses(401, 404, 422, fields=("job_id", "Last-Event-ID", "last_event_id")),
    },
)
def job_events(
    request: Request,
    service: ServiceDep,
    job_id: JobId,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=64, description="Resume after this event.")
    ] = None,
    last_event_id_query: Annotated[
        str | None,
        Query(
            alias="last_event_id",
            max_length=64,
            description="Resume after this event (for clients that cannot set headers).",
        ),
    ] = None,
) -> StreamingResponse:
    """Follow a job live (Server-Sent Events)."""
    job = service.get(job_id)
    prefix = url_prefix(request)
    feed = JobFeed(
        service,
        job,
        view=lambda j: job_out(j, prefix),
        artifact_view=lambda j, a: artifact_out(j, a, prefix),
        cursor=EventCursor.parse(last_event_id or last_event_id_query),
        stop=getattr(request.app.state, "draining", None),
    )
    return StreamingResponse(feed.events(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.get(
    "/jobs/{job_id}/artifacts",
    summary="List a job's artifacts",
    description=(
        "What the job has written so far, as on disk now: the final LoRA (`lora`), step checkpoints "
        "(`checkpoint`), samples (`sample`), generated images (`image`), the ai-toolkit config (`config`) "
        "and the log (`log`), each with its download `url`."
    ),
    response_model=ArtifactList,
    responses={200: {"description": "The artifacts."}, **error_responses(401, 404, 409, 422, fields=("job_id",))},
)
def list_artifacts(request: Request, service: ServiceDep, job_id: JobId) -> dict[str, Any]:
    """List a job's artifacts."""
    job = service.get(job_id)
    prefix = url_prefix(request)
    return {"data": [artifact_out(job, a, prefix) for a in service.current_artifacts(job)]}


@router.get(
    "/jobs/{job_id}/artifacts/{name:path}",
    summary="Download an artifact",
    description=(
        "One artifact by its `name` (e.g. `my_lora.safetensors` or `samples/1735732800000__000000250_0.jpg`). "
        "LoRAs come as `application/octet-stream`, images with their type, the config as `text/yaml`, the "
        "log as `text/plain`. Supports `Range` (206) and `If-None-Match` (304).\n\n"
        "With a bucket configured, an artifact stored there answers `307 Temporary Redirect` to a pre-signed "
        "URL (`LORAPOD_PRESIGN_SECONDS`); with `?redirect=false` the answer is JSON "
        "`{url, expires_at, expires_in, key, name, size, sha256}` instead."
    ),
    response_class=Response,
    responses={
        **DOWNLOAD_RESPONSES,
        307: {"description": "With a bucket: the artifact is there; `Location` is its pre-signed URL."},
        **error_responses(401, 404, 409, 422, fields=("job_id", "name")),
    },
)
def download_artifact(
    request: Request,
    service: ServiceDep,
    job_id: JobId,
    name: Annotated[str, Path(max_length=1024, description="The artifact's name as listed.")],
    redirect: Annotated[
        bool, Query(description="With a bucket: redirect to the pre-signed URL (default) or return it as JSON.")
    ] = True,
) -> Response:
    """Download an artifact."""
    artifact = service.find_artifact(service.get(job_id), name)
    if artifact is None:
        raise NotFound(f"job '{job_id}' has no artifact named '{name}'", field="name")
    if service.objects is not None and isinstance(artifact.get("object"), dict):
        signed = url_answer(service, artifact["object"], str(artifact["name"]))
        if redirect:
            return RedirectResponse(signed["url"], status_code=307)
        return JSONResponse(signed)
    path = service.workspace.resolve(str(artifact["path"]), field="name")
    return file_response(request, path, field="name")


@router.get(
    "/jobs/{job_id}/metrics",
    summary="Read a training's loss history",
    description=(
        "The loss (and learning rate) per step, from the trainer's progress bar or, when the config sets "
        "`logging.use_ui_logger`, from ai-toolkit's own loss log. Long runs are downsampled: at most 1000 points, "
        "`stride` steps apart. `since_step=N` gives only the points after step N (for polling). `phase` says "
        "what the trainer does now: `queued`, `starting`, `training`, `sampling`, `saving`, or the final status. "
        "A generation has no points."
    ),
    response_model=LossHistory,
    responses={200: {"description": "The series."}, **error_responses(401, 404, 422, fields=("job_id", "since_step"))},
)
def job_metrics(
    service: ServiceDep,
    job_id: JobId,
    since_step: Annotated[int, Query(ge=-1, le=2**62, description="Only points after this step.")] = -1,
) -> dict[str, Any]:
    """Read a training's loss history."""
    job = service.get(job_id)
    return metrics_view(job, MetricsStore(service.engine).get(job.id), since_step=since_step)
