"""/health (open, for load balancers and people) and /metrics (Prometheus text, behind auth)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import PlainTextResponse

from app.deps import ServiceDep, require_auth
from app.errors import error_responses
from app.schemas.health import Health
from core.jobs.rows import JobStatus
from core.jobs.service import JobService

router = APIRouter(tags=["health"])

PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@router.get(
    "/health",
    summary="Health and details",
    description=(
        "Always open (no token). `status` is `ok` when the database answers and ai-toolkit's run.py is found, "
        "else `degraded`; the answer is 200 either way, so this doubles as a liveness probe. Details: GPUs, "
        "slots and what they run, ai-toolkit's folder, version and commit, free disk of the workspace, "
        "database, queue depth, jobs by status, lorapod's version."
    ),
    response_model=Health,
    responses={200: {"description": "The health object."}},
)
def get_health(service: ServiceDep) -> dict[str, Any]:
    """Health and details."""
    return service.health()


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    description=(
        "Prometheus text format: `lorapod_jobs{status}` (jobs in each status), `lorapod_queue_depth`, "
        "`lorapod_gpu_slots_total`, `lorapod_gpu_slots_busy`, and `lorapod_job_duration_seconds{type,status}` "
        "(a summary over the most recent finished jobs). Needs the bearer token when one is configured."
    ),
    response_class=PlainTextResponse,
    dependencies=[Depends(require_auth)],
    responses={
        200: {
            "description": "The metrics.",
            "content": {PROMETHEUS_TYPE: {"example": 'lorapod_jobs{status="running"} 1\nlorapod_queue_depth 2\n'}},
        },
        **error_responses(401),
    },
)
def get_metrics(service: ServiceDep) -> PlainTextResponse:
    """Prometheus metrics."""
    return PlainTextResponse(render_metrics(service), media_type=PROMETHEUS_TYPE)


def render_metrics(service: JobService) -> str:
    """The service's metrics in Prometheus' text exposition format."""
    counts = service.store.counts_by_status()
    lines = [
        "# HELP lorapod_jobs Jobs in each status.",
        "# TYPE lorapod_jobs gauge",
        *(f'lorapod_jobs{{status="{status}"}} {counts.get(status, 0)}' for status in JobStatus),
        "# HELP lorapod_queue_depth Jobs waiting for a GPU slot.",
        "# TYPE lorapod_queue_depth gauge",
        f"lorapod_queue_depth {counts.get(JobStatus.queued, 0)}",
        "# HELP lorapod_gpu_slots_total GPU slots this worker schedules on.",
        "# TYPE lorapod_gpu_slots_total gauge",
        f"lorapod_gpu_slots_total {len(service.scheduler.slots)}",
        "# HELP lorapod_gpu_slots_busy GPU slots running a job now.",
        "# TYPE lorapod_gpu_slots_busy gauge",
        f"lorapod_gpu_slots_busy {service.scheduler.busy_slots}",
        "# HELP lorapod_job_duration_seconds Run time of recently finished jobs.",
        "# TYPE lorapod_job_duration_seconds summary",
    ]
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
    for job_type, status, seconds in service.store.durations():
        entry = totals[(job_type, status)]
        entry[0] += 1
        entry[1] += seconds
    for (job_type, status), (count, total) in sorted(totals.items()):
        labels = f'type="{job_type}",status="{status}"'
        lines.append(f"lorapod_job_duration_seconds_count{{{labels}}} {int(count)}")
        lines.append(f"lorapod_job_duration_seconds_sum{{{labels}}} {total:.3f}")
    return "\n".join(lines) + "\n"
