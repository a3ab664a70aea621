"""/jobs/{id}/save, /sample, /resume, /retry: steer a running training, continue or restart a finished one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from app.deps import ServiceDep
from app.errors import error_responses
from app.routes.job_views import JobId, job_out, url_prefix
from app.routes.jobs import IdempotencyKey
from app.schemas.jobs import Job

router = APIRouter(tags=["jobs"])


@router.post(
    "/jobs/{job_id}/save",
    status_code=202,
    summary="Save a checkpoint now",
    description=(
        "A running training writes a checkpoint at its next step end and trains on (ai-toolkit's job-control "
        "`save_now`); it appears among the job's artifacts within a few seconds, and `progress.info` reads "
        "`Saving model` meanwhile. 409 when the job is not a running training, or its trainer type takes no "
        "requests (`textual_inversion_trainer`)."
    ),
    response_model=Job,
    responses={202: {"description": "The job."}, **error_responses(401, 404, 409, 422, fields=("job_id",))},
)
def save_now(request: Request, service: ServiceDep, job_id: JobId) -> dict[str, Any]:
    """Save a checkpoint now."""
    return job_out(service.request(job_id, "save_now"), url_prefix(request))


@router.post(
    "/jobs/{job_id}/sample",
    status_code=202,
    summary="Render the sample prompts now",
    description=(
        "A running training renders its sample prompts at its next step end and trains on (`sample_now`); the "
        "images appear among the artifacts (`kind: sample`). 409 when the job is not a running training or "
        "has no sample prompts."
    ),
    response_model=Job,
    responses={202: {"description": "The job."}, **error_responses(401, 404, 409, 422, fields=("job_id",))},
)
def sample_now(request: Request, service: ServiceDep, job_id: JobId) -> dict[str, Any]:
    """Render the sample prompts now."""
    return job_out(service.request(job_id, "sample_now"), url_prefix(request))


def _created(request: Request, response: Response, body: dict[str, Any]) -> dict[str, Any]:
    response.headers["Location"] = body["links"]["self"]
    return body


@router.post(
    "/jobs/{job_id}/resume",
    status_code=202,
    summary="Resume a failed or cancelled training",
    description=(
        "Queue a new attempt, linked to this one (`resumed_from`), that continues from its newest intact "
        "checkpoint with the same config and total steps. A checkpoint cut short while being written (the "
        "trainer killed mid-save, a full disk) is detected and skipped; the new attempt's `warnings` say which "
        "it resumed from and which it skipped. `resumable_from_step` on a job tells whether this is possible. "
        "409 when the job is not a failed or cancelled training, or it saved no intact checkpoint (retry it)."
    ),
    response_model=Job,
    responses={
        202: {"description": "The new attempt."},
        **error_responses(401, 404, 409, 422, 503, fields=("job_id", "Idempotency-Key")),
    },
)
def resume_job(
    request: Request, response: Response, service: ServiceDep, job_id: JobId, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Resume a failed or cancelled training."""
    return _created(
        request, response, job_out(service.resume(job_id, idempotency_key=idempotency_key), url_prefix(request))
    )


@router.post(
    "/jobs/{job_id}/retry",
    status_code=202,
    summary="Start a failed job again from scratch",
    description=(
        "Queue a new attempt of a failed job, linked to it (`retried_from`): a training starts again from step "
        "0 in a fresh folder with the same config; a generation runs with the same parameters. 409 unless the "
        "job failed."
    ),
    response_model=Job,
    responses={
        202: {"description": "The new attempt."},
        **error_responses(401, 404, 409, 422, 503, fields=("job_id", "Idempotency-Key")),
    },
)
def retry_job(
    request: Request, response: Response, service: ServiceDep, job_id: JobId, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Start a failed job again from scratch."""
    return _created(
        request, response, job_out(service.retry(job_id, idempotency_key=idempotency_key), url_prefix(request))
    )
