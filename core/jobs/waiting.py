"""Following a job until it ends: woken by change notifications, with a slow poll for other pods' writes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from core.jobs.notify import Notifier
from core.jobs.rows import Job
from core.jobs.store import JobStore


async def watch_job(store: JobStore, notifier: Notifier, job_id: str, *, poll_seconds: float) -> AsyncIterator[Job]:
    """Yield the job now and after each change, ending with its terminal state."""
    last_seen: Any = None
    while True:
        job = store.get(job_id)
        stamp = (job.updated_at, job.status, job.step, len(job.artifacts))
        if stamp != last_seen:
            last_seen = stamp
            yield job
        if job.terminal:
            return
        await notifier.wait(job_id, timeout=poll_seconds)


async def wait_for_job(
    store: JobStore,
    notifier: Notifier,
    job_id: str,
    *,
    timeout: float | None = None,
    on_change: Callable[[Job], None] | None = None,
) -> Job:
    """Wait until the job is terminal (or timeout), calling on_change at each change; return it."""
    deadline = None if timeout is None else time.monotonic() + timeout
    job = store.get(job_id)
    async for job in watch_job(store, notifier, job_id, poll_seconds=1.0):
        if on_change is not None:
            on_change(job)
        if deadline is not None and time.monotonic() >= deadline:
            break
    return job
