"""Start-up recovery: jobs a previous server run left `running` are adopted or failed, never left hanging."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.jobs.rows import JobStatus, JobType, utcnow
from gpu.adopted import process_matches

if TYPE_CHECKING:
    from core.jobs.service import JobService

log = logging.getLogger("lorapod.recovery")
INTERRUPTED = "interrupted: server restarted"


async def recover_jobs(service: JobService) -> None:
    """Fail this worker's orphaned running jobs; adopt trainers that survived the restart."""
    for job in service.store.running_on(service.settings.worker_id):
        if job.type == JobType.train and job.pid and process_matches(job.pid, "run.py"):
            slot = next((s for s in service.scheduler.slots if s.label == job.gpu and s.job_id is None), None)
            if slot is not None:
                service.scheduler.adopt(job, slot)
                log.info("adopted the running trainer of job %s (pid %s)", job.id, job.pid, extra={"job_id": job.id})
                continue
        service.store.update(job.id, artifacts=service.current_artifacts(job))
        if service.store.transition(
            job.id, from_statuses=[JobStatus.running], status=JobStatus.failed, error=INTERRUPTED, finished_at=utcnow()
        ):
            service.metrics.job_finished(job.type, JobStatus.failed, job.started_at)
        log.warning("job %s was running when the server stopped: marked failed", job.id, extra={"job_id": job.id})
