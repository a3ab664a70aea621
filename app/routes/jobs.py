"""/jobs: start, list, inspect, cancel and delete jobs; follow them live; read their logs; download artifacts."""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Body, Header, Query, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.deps import ServiceDep, body_limited_route, limit_body
from app.errors import error_responses
from app.routes.job_views import JobId, job_json, job_out, stored_job_body, url_prefix
from app.schemas.jobs import Job as JobOut
from app.schemas.jobs import JobPage
from core.contract.validation import parse
from core.errors import InvalidInput, TooLarge
from core.jobs.requests import JobRequest, TrainYamlRequest
from core.jobs.rows import Job, JobStatus, JobType
from core.jobs.service import JobService

# Bodies are capped at RunPod's /run payload limit, so one payload works on both adapters.
router = APIRouter(
    tags=["jobs"],
    route_class=body_limited_route(lambda s: s.payload_limit_run_bytes),
)

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
    "caption": {
        "summary": "Caption a dataset's images",
        "description": "Writes a caption for every image that has none (`overwrite: true`: for every image) "
        "with a captioning model on a GPU slot. `[trigger]` in prefix or suffix becomes the trigger word.",
        "value": {
            "type": "caption",
            "training_name": "my_dataset",
            "prefix": "a photo of [trigger],",
            "trigger_word": "sks",
            "overwrite": False,
        },
    },
}


def _accepted(request: Request, response: Response, job: Job) -> dict[str, Any]:
    body = job_out(job, url_prefix(request))
    response.headers["Location"] = body["links"]["self"]
    return body


# ----- starting jobs


@router.post(
    "/jobs",
    status_code=202,
    summary="Start a job",
    description=(
        "Queue a training (`train`, `train_with_yaml`, either with `autocaption`), a generation (`generate`) "
        "or a caption job (`caption`). The body is the same "
        "`{type, ...fields}` object the RunPod handler takes as `input`. The answer is the queued job with "
        "`links` to follow it (`events`), read its log, cancel it and download its artifacts; `Location` "
        "points at the job.\n\n"
        "Send an `Idempotency-Key` header to make retries safe: a request with a key already used answers "
        "202 with the job the first request created, and starts nothing."
    ),
    response_model=JobOut,
    responses={
        202: {"description": "The queued job (or, for a repeated Idempotency-Key, the job created before)."},
        **error_responses(
            400, 401, 413, 422, 503, fields=("training_name", "type", "steps", "lora", "Idempotency-Key")
        ),
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
    response_model=JobOut,
    responses={
        202: {"description": "The queued training."},
        **error_responses(400, 401, 413, 422, 503, fields=("file", "yaml_config", "Content-Type", "Idempotency-Key")),
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
    response_model=JobPage,
    responses={
        200: {"description": "One page of jobs."},
        **error_responses(401, 422, fields=("cursor", "status", "type", "limit")),
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
    prefix = url_prefix(request)
    return {"data": [job_out(job, prefix) for job in jobs], "next_cursor": next_cursor}


async def get_job(request: Request, job_id: JobId) -> Response:
    """Get a job."""
    # Clients poll this every second or so: one point read, and the JSON of an unchanged row is not rebuilt
    # (app/hot_paths.py answers the same way before FastAPI's routing; this route answers what it passes on).
    # The service is taken from the app rather than as a dependency: FastAPI's per-dependency cost shows here.
    state = request.app.state
    prefix = url_prefix(request)
    body = await stored_job_body(state, job_id, prefix)
    if body is None:  # with a bucket, the record of a job another worker ran; else NotFound
        service = cast(JobService, state.service)
        body = job_json(job_out(await run_in_threadpool(service.get, job_id), prefix))
    return Response(body, media_type="application/json")


router.add_api_route(
    "/jobs/{job_id}",
    get_job,
    methods=["GET"],
    # A GET has no body to cap: the plain route class spares every status poll the body-limit wrapper.
    route_class_override=APIRoute,
    summary="Get a job",
    description=(
        "Status, progress (step, total, percent, steps per second, ETA in seconds, last loss), the error of "
        "a failed job, its artifacts with download URLs, and links."
    ),
    response_model=JobOut,
    responses={200: {"description": "The job."}, **error_responses(401, 404, 422, fields=("job_id",))},
)


@router.post(
    "/jobs/{job_id}/cancel",
    status_code=202,
    summary="Cancel a job",
    description=(
        "A queued job is cancelled at once. A running training is asked to stop (SIGINT, then SIGKILL after "
        "`LORAPOD_STOP_GRACE_SECONDS`); its status turns `cancelled` when the process has exited, and the "
        "checkpoints it saved stay. With `save=true` a running training first saves a checkpoint through "
        "ai-toolkit's job-control table and stops once it is written (plain stop if the trainer does not answer "
        "within `LORAPOD_SAVE_TIMEOUT_SECONDS`). 409 when the job has already finished."
    ),
    response_model=JobOut,
    responses={
        202: {"description": "The job, `cancel_requested` true (or already `cancelled`)."},
        **error_responses(401, 404, 409, 422, fields=("job_id",)),
    },
)
def cancel_job(
    request: Request,
    service: ServiceDep,
    job_id: JobId,
    save: Annotated[
        bool, Query(description="A running training saves a checkpoint first (it becomes an artifact), then stops.")
    ] = False,
) -> dict[str, Any]:
    """Cancel a job."""
    return job_out(service.cancel(job_id, save=save), url_prefix(request))


@router.delete(
    "/jobs/{job_id}",
    status_code=204,
    summary="Delete a finished job",
    description=(
        "Remove a finished job's record; with `files=true` also its output folder (LoRAs, samples) and its "
        "log. 409 while the job is queued or running: cancel it first."
    ),
    responses={204: {"description": "Deleted."}, **error_responses(401, 404, 409, 422, fields=("job_id", "files"))},
)
def delete_job(
    service: ServiceDep,
    job_id: JobId,
    files: Annotated[bool, Query(description="Also delete the job's output folder and log.")] = False,
) -> Response:
    """Delete a finished job."""
    service.delete(job_id, files=files)
    return Response(status_code=204)
