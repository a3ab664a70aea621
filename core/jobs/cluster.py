"""What ties pods sharing one database together: leases, and wake-ups from the jobs channel."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from core.db import is_postgres
from core.db_listen import JobChannelListener
from core.jobs.artifacts import remove_job_files
from core.jobs.leases import LeaseKeeper, stop_lost_trainers
from core.jobs.notify import Notifier
from core.jobs.runner import JobRunner
from core.jobs.scheduler import Scheduler
from core.jobs.store import JobStore
from core.storage.workspace import Workspace

log = logging.getLogger("lorapod.cluster")


class PodLink:
    """Runs the lease keeper, and on PostgreSQL listens for other pods' changes (SQLite: one pod, no channel)."""

    def __init__(
        self,
        *,
        store: JobStore,
        scheduler: Scheduler,
        runner: JobRunner,
        notifier: Notifier,
        workspace: Workspace,
        lease_seconds: float,
        stop_grace: float = 60.0,
    ) -> None:
        self.store = store
        self.stop_grace = stop_grace
        self.workspace = workspace
        self.scheduler = scheduler
        self.runner = runner
        self.notifier = notifier
        self.leases = LeaseKeeper(
            store=store,
            worker_id=scheduler.worker_id,
            lease_seconds=lease_seconds,
            running_here=runner.running_ids,
            stop_here=runner.stop,
        )
        self._task: asyncio.Task[None] | None = None
        self._listener: JobChannelListener | None = None

    async def start(self) -> None:
        """Start renewing leases and, on PostgreSQL, listening on the jobs channel."""
        adopted = {int(job.pid) for job in self.store.running_on(self.scheduler.worker_id) if job.pid}
        stop_lost_trainers(self.store, self.scheduler.worker_id, keep_pids=adopted, grace=self.stop_grace)
        if is_postgres(self.store.engine):
            self._listener = JobChannelListener(self.store.engine, self.on_payload, on_reconnect=self.look_again)
            await asyncio.to_thread(self._listener.start)
        self._task = asyncio.create_task(self.leases.run(), name="lorapod-leases")

    async def close(self) -> None:
        """Stop renewing and listening; running trainers keep going (their leases lapse unless adopted)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)
            self._listener = None

    def on_payload(self, payload: str) -> None:
        """One change announced by a pod (this one included): '<job id> <queued|cancel|changed|deleted|purge>'."""
        job_id, _, rest = payload.partition(" ")
        kind, *args = rest.split(" ")
        self.notifier.notify(job_id)  # waiters here (SSE, /status, runsync) see other pods' progress at once
        if kind == "queued":
            self.scheduler.kick()
        elif kind == "cancel":
            self.runner.stop(job_id)  # a no-op unless the job runs on this pod
        elif kind == "purge" and args and args[0] == self.scheduler.worker_id:
            # a job this pod ran was deleted with its files on another pod; the files are here
            try:
                remove_job_files(self.workspace, job_id, args[1:])
            except Exception:
                log.exception("could not delete the files of job %s", job_id)

    def look_again(self) -> None:
        """After a lost connection: claim what was queued and honour cancels sent meanwhile."""
        for job_id in self.store.cancel_requested_on(self.scheduler.worker_id):
            self.runner.stop(job_id)
        self.scheduler.kick()
