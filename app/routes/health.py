"""/health (open, for people), /health/live and /health/ready (open, for probes) and /metrics (behind auth)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from app.deps import ServiceDep, require_auth
from app.errors import error_responses
from app.schemas.health import Health, Live, Ready
from core.db import ping
from core.health import toolkit_info
from core.jobs.service import JobService
from core.metrics import CONTENT_TYPE

router = APIRouter(tags=["health"])

PROMETHEUS_TYPE = CONTENT_TYPE


@router.get(
    "/health",
    summary="Health and details",
    description=(
        "Always open (no token). `status` is `ok` when the database answers, ai-toolkit's run.py is found and "
        "the generation environment is not known to be broken, else `degraded`; the answer is 200 either way. "
        "Details: GPUs, slots and what they run, ai-toolkit's folder, version and commit, `generation` (whether "
        "AI_TOOLKIT_PYTHON imports torch and diffusers: `checking` at start, then `ready` or `unavailable` with "
        "the reason), free disk of the workspace, `bulk_download` bundles kept on disk, database, queue depth, "
        "jobs by status, lorapod's version. Probes: `/health/live` and `/health/ready`."
    ),
    response_model=Health,
    responses={200: {"description": "The health object."}},
)
def get_health(service: ServiceDep) -> dict[str, Any]:
    """Health and details."""
    return service.health()


@router.get(
    "/health/live",
    summary="Liveness probe",
    description="Always open. 200 while the process answers HTTP at all; it checks nothing else.",
    response_model=Live,
)
def get_live() -> dict[str, str]:
    """Liveness probe."""
    return {"status": "alive"}


@router.get(
    "/health/ready",
    summary="Readiness probe",
    description=(
        "Always open. 200 when the job service is running and the database answers; 503 while starting, once a "
        "shutdown has begun (SIGTERM) or when the database is unreachable, with the reason in `error`. What the "
        "pod can run (ai-toolkit, generation) is in `checks`; it does not gate readiness, because datasets, "
        "files and downloads still work without it."
    ),
    response_model=Ready,
    responses={503: {"model": Ready, "description": "Not ready: starting, shutting down, or no database."}},
)
def get_ready(request: Request) -> JSONResponse:
    """Readiness probe."""
    service = getattr(request.app.state, "service", None)
    draining = getattr(request.app.state, "draining", None)
    problems: list[str] = []
    checks: dict[str, bool | None] = {"service": bool(service and service.started), "database": False}
    if service is None or not service.started:
        problems.append("the job service is not running")
    else:
        checks["database"] = ping(service.engine)
        checks["training"] = health_toolkit_found(service)
        checks["generation"] = service.generation.ready
    if service is not None and not checks["database"]:
        problems.append("the database does not answer")
    if draining is not None and draining.is_set():
        problems.append("shutting down")
    if problems:
        return JSONResponse({"status": "not ready", "error": "; ".join(problems), "checks": checks}, status_code=503)
    return JSONResponse({"status": "ready", "checks": checks})


def health_toolkit_found(service: JobService) -> bool:
    """Whether ai-toolkit's run.py is where AI_TOOLKIT_DIR says."""
    return bool(
        toolkit_info(str(service.settings.ai_toolkit_dir) if service.settings.ai_toolkit_dir else None)["found"]
    )


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description=(
        "Prometheus text format. Counters (they only grow while the process runs): "
        "`lorapod_jobs_submitted_total{type}`, `lorapod_jobs_finished_total{type,status}`, "
        "`lorapod_trainer_exits_total{cause}`, `lorapod_runpod_calls_finished_total{status}`, "
        "`lorapod_http_requests_total{method,route,status}`. Histograms: `lorapod_job_queue_wait_seconds{type}`, "
        "`lorapod_job_run_seconds{type,status}`, `lorapod_job_first_progress_seconds{type}`, "
        "`lorapod_http_request_duration_seconds{method,route}`. Gauges: `lorapod_jobs{status}` (jobs in the "
        "table), `lorapod_queue_depth`, `lorapod_gpu_slots_total`, `lorapod_gpu_slots_busy`, "
        "`lorapod_warm_generators`, `lorapod_workspace_free_bytes`, `lorapod_generation_ready`. "
        "Needs the bearer token when one is configured."
    ),
    response_class=Response,
    dependencies=[Depends(require_auth)],
    responses={
        200: {
            "description": "The metrics.",
            "content": {
                PROMETHEUS_TYPE: {
                    "example": "# TYPE lorapod_jobs_submitted_total counter\n"
                    'lorapod_jobs_submitted_total{type="train"} 3.0\n'
                }
            },
        },
        **error_responses(401),
    },
)
def get_metrics(service: ServiceDep) -> Response:
    """Prometheus metrics."""
    return Response(service.metrics.render(), media_type=PROMETHEUS_TYPE)
