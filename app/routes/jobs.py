"""/jobs: start, list, inspect, cancel and delete jobs; follow them live; read their logs; download artifacts."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Body, Header, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.deps import ServiceDep, body_limited_route, limit_body
from app.errors import error_responses
from app.routes.files import DOWNLOAD_RESPONSES, file_response
from app.sse import SSE_HEADERS, EventCursor, JobFeed
from core.contract.validation import parse
from core.contract.views import job_view
from core.errors import InvalidInput, NotFound, TooLarge
from core.jobs.requests import JobRequest, TrainYamlRequest
from core.jobs.rows import Job, JobStatus, JobType
from core.storage.logs import MAX_TAIL_LINES, read_log

# Bodies are capped at RunPod's /run payload limit, so one payload works on both adapters.
router = APIRouter(tags=["jobs"], route_class=body_limited_route(lambda s: s.payload_limit_run_bytes))

JobId = Annotated[str, Path(min_length=1, max_length=64, description="The job's id, e.g. `train_ab12cd34ef56`.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Any unique string; a retry with the same key returns the job the first request created.",
    ),
]
YAML_TYPES = frozenset({"application/x-yaml", "application/yaml", "text/yaml", "text/x-yaml", "text/plain", ""})
# Room for the multipart envelope around a YAML file (boundaries and part headers).
_MULTIPART_SLACK = 16 * 1024

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


def _json_example(description: str, example: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"example": example}}}


REQUEST_EXAMPLES: dict[str, dict[str, Any]] = {
    "train": {
        "summary": "Train a LoRA from simple parameters",
        "description": "lorapod writes the ai-toolkit config. "
        "Upload the dataset first (`POST /datasets/{name}/files`).",
        "value": {
            "type": "train",
            "training_name": "my_dataset",
            "trigger_word": "sks",
            "base_model": "sd15",
            "steps": 1000,
            "rank": 16,
            "learning_rate": 0.0004,
            "save_every": 250,
            "sample_every": 250,
            "sample_prompts": ["a photo of [trigger] on a beach"],
        },
    },
    "train_with_yaml": {
        "summary": "Train from a whole ai-toolkit config",
        "description": "The config as a YAML (or JSON) string. To upload a .yaml file instead, use `POST /jobs/yaml`.",
        "value": {
            "type": "train_with_yaml",
            "yaml_config": "job: extension\nconfig:\n  name: my_lora\n  process:\n    - type: sd_trainer\n"
            "      training_folder: output\n      datasets:\n        - folder_path: training_data/my_dataset\n"
            "      train:\n        steps: 1000\n      model:\n        name_or_path: runwayml/stable-diffusion-v1-5\n",
        },
    },
    "generate": {
        "summary": "Generate images with a LoRA",
        "description": "`lora` names a LoRA file under output/ (see `GET /models`) "
        "or the process_id of a finished training.",
        "value": {
            "type": "generate",
            "prompt": "a photo of sks on a beach",
            "lora": "train_ab12cd34ef56",
            "base_model": "sd15",
            "width": 512,
            "height": 512,
            "steps": 25,
            "seed": 42,
            "num_images": 2,
        },
    },
}


# ----- views: the core's job view plus REST links


def job_links(job_id: str, prefix: str = "") -> dict[str, str]:
    """Where to follow, cancel and download a job."""
    base = f"{prefix}/jobs/{quote(job_id, safe='')}"
    return {
        "self": base,
        "cancel": f"{base}/cancel",
        "events": f"{base}/events",
        "logs": f"{base}/logs",
        "artifacts": f"{base}/artifacts",
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


def _prefix(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _accepted(request: Request, response: Response, job: Job) -> dict[str, Any]:
    body = job_out(job, _prefix(request))
    response.headers["Location"] = body["links"]["self"]
    return body


# ----- starting jobs


@router.post(
    "/jobs",
    status_code=202,
    summary="Start a job",
    description=(
        "Queue a training (`train`, `train_with_yaml`) or a generation (`generate`). The body is the same "
        "`{type, ...fields}` object the RunPod handler takes as `input`. The answer is the queued job with "
        "`links` to follow it (`events`), read its log, cancel it and download its artifacts; `Location` "
        "points at the job.\n\n"
        "Send an `Idempotency-Key` header to make retries safe: a request with a key already used answers "
        "202 with the job the first request created, and starts nothing."
    ),
    responses={
        202: _json_example(
            "The queued job (or, for a repeated Idempotency-Key, the job created before).",
            {**JOB_EXAMPLE, "status": "queued", "progress": {**JOB_EXAMPLE["progress"], "step": 0}},
        ),
        **error_responses(401, 404, 413, 422, 503),
    },
)
def submit_job(
    request: Request,
    response: Response,
    service: ServiceDep,
    job_request: Annotated[JobRequest, Body(openapi_examples=REQUEST_EXAMPLES)],
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Start a job."""
    job = service.submit(job_request, idempotency_key=idempotency_key)
    return _accepted(request, response, job)


@router.post(
    "/jobs/yaml",
    status_code=202,
    summary="Start a training from an uploaded ai-toolkit YAML file",
    description=(
        "The same as `POST /jobs` with `type: train_with_yaml`, for a config file on disk: send it as the "
        "multipart field `file` (`curl -F file=@my_lora.yaml`), or as the raw body with `Content-Type: "
        "application/x-yaml` (`curl --data-binary @my_lora.yaml`). Paths in the config are checked against "
        "the workspace. The file may be at most `LORAPOD_MAX_YAML_BYTES` (413 beyond)."
    ),
    responses={
        202: _json_example("The queued training.", {**JOB_EXAMPLE, "status": "queued"}),
        **error_responses(401, 413, 422, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "properties": {"file": {"type": "string", "format": "binary", "description": "The YAML."}},
                        "required": ["file"],
                    }
                },
                "application/x-yaml": {
                    "schema": {"type": "string"},
                    "example": REQUEST_EXAMPLES["train_with_yaml"]["value"]["yaml_config"],
                },
            },
        }
    },
)
async def submit_yaml_job(
    request: Request, response: Response, service: ServiceDep, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Start a training from an uploaded ai-toolkit YAML file."""
    limit = service.settings.max_yaml_bytes
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        limited = limit_body(request, limit + _MULTIPART_SLACK, field="file")
        async with limited.form(max_files=1, max_fields=4) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInput("file", "is required: a multipart file field named 'file' holding the YAML")
            data = await upload.read(limit + 1)
        field = "file"
    elif content_type in YAML_TYPES:
        data = await limit_body(request, limit, field="yaml_config").body()
        field = "yaml_config"
    else:
        raise InvalidInput(
            "Content-Type", "must be multipart/form-data or application/x-yaml (JSON goes to POST /jobs)"
        )
    if len(data) > limit:
        raise TooLarge(f"{field}: the YAML is larger than the limit of {limit} bytes", field=field)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(field, "must be UTF-8 text") from None
    if not text.strip():
        raise InvalidInput(field, "is empty: send the ai-toolkit config")
    yaml_request = parse(TrainYamlRequest, {"type": "train_with_yaml", "yaml_config": text})
    job = await run_in_threadpool(service.submit, yaml_request, idempotency_key=idempotency_key)
    return _accepted(request, response, job)


# ----- reading jobs


@router.get(
    "/jobs",
    summary="List jobs",
    description=(
        "Newest first, optionally only one status and/or type. Pages hold `limit` jobs; pass `next_cursor` "
        "back as `cursor` for the next page. Cursors stay valid while new jobs arrive: a page never repeats "
        "or skips a job because another was queued meanwhile. `next_cursor` is null on the last page."
    ),
    responses={
        200: _json_example("One page of jobs.", {"data": [JOB_EXAMPLE], "next_cursor": "WyIyMDI1LTAxLTAxVDEy"}),
        **error_responses(401, 422),
    },
)
def list_jobs(
    request: Request,
    service: ServiceDep,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    job_type: Annotated[JobType | None, Query(alias="type", description="Only jobs of this type.")] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Jobs per page.")] = 50,
    cursor: Annotated[str | None, Query(max_length=512, description="`next_cursor` of the previous page.")] = None,
) -> dict[str, Any]:
    """List jobs."""
    jobs, next_cursor = service.list(
        status=status.value if status else None,
        job_type=job_type.value if job_type else None,
        limit=limit,
        cursor=cursor,
    )
    prefix = _prefix(request)
    return {"data": [job_out(job, prefix) for job in jobs], "next_cursor": next_cursor}


@router.get(
    "/jobs/{job_id}",
    summary="Get a job",
    description=(
        "Status, progress (step, total, percent, steps per second, ETA in seconds, last loss), the error of "
        "a failed job, its artifacts with download URLs, and links."
    ),
    responses={200: _json_example("The job.", JOB_EXAMPLE), **error_responses(401, 404, 422)},
)
def get_job(request: Request, service: ServiceDep, job_id: JobId) -> dict[str, Any]:
    """Get a job."""
    return job_out(service.get(job_id), _prefix(request))


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    summary="Cancel a job",
    description=(
        "A queued job is cancelled at once. A running training is asked to stop (SIGINT, then SIGKILL after "
        "`LORAPOD_STOP_GRACE_SECONDS`); its status turns `cancelled` when the process has exited, and the "
        "checkpoints it saved stay. 409 when the job has already finished."
    ),
    responses={
        202: _json_example(
            "The job, `cancel_requested` true (or already `cancelled`).", {**JOB_EXAMPLE, "cancel_requested": True}
        ),
        **error_responses(401, 404, 409, 422),
    },
)
def cancel_job(request: Request, service: ServiceDep, job_id: JobId) -> dict[str, Any]:
    """Cancel a job."""
    return job_out(service.cancel(job_id), _prefix(request))


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    summary="Delete a finished job",
    description=(
        "Remove a finished job's record; with `files=true` also its output folder (LoRAs, samples) and its "
        "log. 409 while the job is queued or running: cancel it first."
    ),
    responses={204: {"description": "Deleted."}, **error_responses(401, 404, 409, 422)},
)
def delete_job(
    service: ServiceDep,
    job_id: JobId,
    files: Annotated[bool, Query(description="Also delete the job's output folder and log.")] = False,
) -> Response:
    """Delete a finished job."""
    service.delete(job_id, files=files)
    return Response(status_code=204)


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
        **error_responses(401, 404, 422),
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
        **error_responses(401, 404, 422),
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
    prefix = _prefix(request)
    feed = JobFeed(
        service,
        job,
        view=lambda j: job_out(j, prefix),
        artifact_view=lambda j, a: artifact_out(j, a, prefix),
        cursor=EventCursor.parse(last_event_id or last_event_id_query),
        stop=getattr(request.app.state, "draining", None),
    )
    return StreamingResponse(feed.events(), media_type="text/event-stream", headers=SSE_HEADERS)


# ----- artifacts


@router.get(
    "/jobs/{job_id}/artifacts",
    summary="List a job's artifacts",
    description=(
        "What the job has written so far, as on disk now: the final LoRA (`lora`), step checkpoints "
        "(`checkpoint`), samples (`sample`), generated images (`image`), the ai-toolkit config (`config`) "
        "and the log (`log`), each with its download `url`."
    ),
    responses={
        200: _json_example("The artifacts.", {"data": JOB_EXAMPLE["artifacts"]}),
        **error_responses(401, 404, 422),
    },
)
def list_artifacts(request: Request, service: ServiceDep, job_id: JobId) -> dict[str, Any]:
    """List a job's artifacts."""
    job = service.get(job_id)
    prefix = _prefix(request)
    return {"data": [artifact_out(job, a, prefix) for a in service.current_artifacts(job)]}


@router.get(
    "/jobs/{job_id}/artifacts/{name:path}",
    summary="Download an artifact",
    description=(
        "One artifact by its `name` (e.g. `my_lora.safetensors` or `samples/1735732800000__000000250_0.jpg`). "
        "LoRAs come as `application/octet-stream`, images with their type, the config as `text/yaml`, the "
        "log as `text/plain`. Supports `Range` (206) and `If-None-Match` (304)."
    ),
    response_class=Response,
    responses={**DOWNLOAD_RESPONSES, **error_responses(401, 404, 422)},
)
def download_artifact(
    request: Request,
    service: ServiceDep,
    job_id: JobId,
    name: Annotated[str, Path(max_length=1024, description="The artifact's name as listed.")],
) -> Response:
    """Download an artifact."""
    artifact = service.find_artifact(service.get(job_id), name)
    if artifact is None:
        raise NotFound(f"job '{job_id}' has no artifact named '{name}'", field="name")
    path = service.workspace.resolve(str(artifact["path"]), field="name")
    return file_response(request, path, field="name")
