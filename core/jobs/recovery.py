"""Start-up recovery: jobs a previous server run left `running` are adopted or failed, never left hanging."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from core.jobs.rows import Job, JobStatus, JobType, utcnow
from core.jobs.scheduler import Scheduler
from core.jobs.store import JobStore
from core.metrics import ServiceMetrics
from gpu.adopted import process_matches

log = logging.getLogger("lorapod.recovery")
INTERRUPTED = "interrupted: server restarted"


async def recover_jobs(
    *,
    store: JobStore,
    scheduler: Scheduler,
    worker_id: str,
    current_artifacts: Callable[[Job], list[dict[str, Any]]],
    metrics: ServiceMetrics,
) -> None:
    """Fail this worker's orphaned running jobs; adopt trainers that survived the restart."""
    for job in store.running_on(worker_id):
        if job.type == JobType.train and job.pid and process_matches(job.pid, "run.py"):
            slot = next((s for s in scheduler.slots if s.label == job.gpu and s.job_id is None), None)
            if slot is not None:
                scheduler.adopt(job, slot)
                log.info("adopted the running trainer of job %s (pid %s)", job.id, job.pid, extra={"job_id": job.id})
                continue
        artifacts = current_artifacts(job)
        store.update(job.id, artifacts=artifacts)
        if store.transition(
            job.id,
            from_statuses=[JobStatus.running],
            status=JobStatus.failed,
            error=interrupted_message(job, artifacts),
            finished_at=utcnow(),
        ):
            metrics.job_finished(job.type, JobStatus.failed, job.started_at)
        log.warning("job %s was running when the server stopped: marked failed", job.id, extra={"job_id": job.id})


def interrupted_message(job: Job, artifacts: list[dict[str, Any]]) -> str:
    """Why a job a dead trainer left behind failed, how far it got, and whether it can be resumed."""
    if job.type != JobType.train:
        return INTERRUPTED
    steps = [a["step"] for a in artifacts if a.get("kind") == "checkpoint" and isinstance(a.get("step"), int)]
    where = f" at step {job.step} of {job.total_steps}" if job.total_steps else ""
    if not steps:
        return f"{INTERRUPTED}{where}; no checkpoint was saved: retry it to start again"
    return f"{INTERRUPTED}{where}; resume it to continue from its checkpoint at step {max(steps)}"
