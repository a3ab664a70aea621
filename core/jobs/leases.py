"""Job leases: a pod renews the lease of every job it runs; a job whose lease ran out lost its pod.

Whichever pod sees an expired lease first takes the job over (one conditional update, so only one
pod does): a job whose trainer never started goes back to the queue, any other fails "worker lost".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from datetime import datetime, timedelta

from core.jobs.rows import Job, JobStatus, utcnow
from core.jobs.store import JobStore
from gpu.adopted import process_matches

log = logging.getLogger("lorapod.leases")
WORKER_LOST = "worker lost"
# How far back a restarting pod looks for its jobs that other pods declared lost.
_LOST_LOOKBACK = timedelta(days=2)


def renew_interval(lease_seconds: float) -> float:
    """How often leases are renewed and checked: three times a lease, so one late renewal is harmless."""
    return max(0.1, lease_seconds / 3)


def lease_deadline(now: datetime, lease_seconds: float) -> datetime:
    """When a lease taken or renewed now runs out: early enough that, with one sweep per renew_interval,
    a dead pod's jobs are taken over at most lease_seconds after its last renewal (one renewal may be late)."""
    return now + timedelta(seconds=lease_seconds - renew_interval(lease_seconds))


def never_started(job: Job) -> bool:
    """True when the job's process never ran (no pid, no step): running it again elsewhere is safe."""
    return job.pid is None and not job.step


class LeaseKeeper:
    """Renews this worker's leases and takes over jobs whose worker stopped renewing."""

    def __init__(
        self,
        *,
        store: JobStore,
        worker_id: str,
        lease_seconds: float,
        running_here: Callable[[], list[str]],
        stop_here: Callable[[str], object],
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self._running_here = running_here
        self._stop_here = stop_here

    async def run(self) -> None:
        """Renew and sweep every renew_interval until cancelled; a database hiccup only skips a round."""
        while True:
            try:
                await asyncio.to_thread(self.tick)
            except Exception:
                log.exception("lease renewal failed")
            await asyncio.sleep(renew_interval(self.lease_seconds))

    def tick(self, now: datetime | None = None) -> list[str]:
        """One round: renew this worker's leases, stop what it lost, take over expired jobs; ids taken over."""
        now = now or utcnow()
        renewed = set(self.store.renew_leases(self.worker_id, lease_deadline(now, self.lease_seconds)))
        for job_id in self._running_here():
            if job_id not in renewed:
                self._drop_if_lost(job_id)
        return [job.id for job in self.store.expired_leases(now, other_than=self.worker_id) if self.take_over(job, now)]

    def take_over(self, job: Job, now: datetime) -> bool:
        """Requeue or fail one job whose lease expired; False when another pod (or its own) got there first."""
        if never_started(job) and not job.cancel_requested:
            taken = self.store.take_over(
                job.id, now, status=JobStatus.queued, worker_id=None, gpu=None, started_at=None, lease_expires_at=None
            )
            if taken:
                log.warning("job %s: worker %s stopped renewing before it started; queued again", job.id, job.worker_id)
            return taken
        status = JobStatus.cancelled if job.cancel_requested else JobStatus.failed
        error = f"{WORKER_LOST}: pod '{job.worker_id}' stopped renewing its lease ({self.lease_seconds:g} s)"
        taken = self.store.take_over(job.id, now, status=status, error=error, finished_at=utcnow())
        if taken:
            log.warning("job %s: %s", job.id, error)
        return taken

    def _drop_if_lost(self, job_id: str) -> None:
        # This worker's job is no longer its own: another pod took it over while this one was stalled,
        # so the trainer must not keep the GPU (or write progress onto a finished record).
        job = self.store.find(job_id)
        taken = job is None or job.worker_id != self.worker_id
        if job is None or taken or (job.status != JobStatus.running and (job.error or "").startswith(WORKER_LOST)):
            log.warning("job %s was taken over by another pod; stopping it here", job_id)
            self._stop_here(job_id)


def stop_lost_trainers(store: JobStore, worker_id: str, *, keep_pids: set[int], grace: float) -> list[int]:
    """At start-up: stop trainers still alive on this machine whose jobs other pods failed as lost; their pids.

    The job's record is final, so the trainer would only hold the GPU; SIGINT first (ai-toolkit's stop
    path), SIGKILL to its group after grace seconds, from a timer thread so start-up does not wait."""
    stopped = []
    for job in store.lost_on(worker_id, utcnow() - _LOST_LOOKBACK, WORKER_LOST):
        pid = int(job.pid or 0)
        if pid in keep_pids or not process_matches(pid, "run.py"):
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGINT)
            stopped.append(pid)
            log.warning("job %s was declared lost while this pod was away; stopping its trainer (pid %s)", job.id, pid)
    if stopped:
        timer = threading.Timer(grace, _kill_groups, args=(stopped,))
        timer.daemon = True
        timer.start()
    return stopped


def _kill_groups(pids: list[int]) -> None:
    for pid in pids:
        if process_matches(pid, "run.py"):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
