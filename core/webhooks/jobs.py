"""Job webhooks: the final job POSTed (with retries) once it ends, and throttled progress when asked.

The job's `webhook` column holds the URL, whether progress is wanted, the delivery state (`pending` until the
final message is delivered or its attempts run out) and every attempt. A final message still `pending` when the
server stops is sent again at the next start, with the same webhook-id, so receivers can drop the duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Session, col, select

from core.contract.views import job_view
from core.errors import InvalidInput
from core.jobs.notify import Notifier
from core.jobs.rows import Job
from core.jobs.store import JobStore
from core.settings import Settings
from core.webhooks.delivery import Policy, deliver
from core.webhooks.targets import check_url
from gpu.loop import call_soon

log = logging.getLogger("lorapod.webhooks")
# Attempts kept on the job: progress messages would otherwise grow the row without bound.
MAX_RECORDED_ATTEMPTS = 50


def webhook_field(settings: Settings, url: str | None, progress: bool) -> dict[str, Any] | None:
    """The stored webhook of a new job, with the URL checked; InvalidInput names the field."""
    if url is None:
        if progress:
            raise InvalidInput("webhook_progress", "needs a webhook URL")
        return None
    if settings.webhook_secret is None:
        raise InvalidInput("webhook", "needs LORAPOD_WEBHOOK_SECRET set on the server, to sign each delivery")
    checked = check_url(url, allow_private=settings.webhook_allow_private)
    return {"url": checked, "progress": progress, "state": "pending", "attempts": []}


def policy_of(settings: Settings, attempts: int | None = None) -> Policy:
    """The delivery policy from the settings."""
    return Policy(
        attempts=attempts or settings.webhook_attempts,
        backoff_seconds=settings.webhook_backoff_seconds,
        timeout_seconds=settings.webhook_timeout_seconds,
        allow_private=settings.webhook_allow_private,
    )


class JobWebhooks:
    """Watches jobs that have a webhook (through the notifier) and delivers their messages on the loop."""

    def __init__(self, *, store: JobStore, settings: Settings, notifier: Notifier) -> None:
        self.store = store
        self.settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watched: set[str] = set()
        self._final: dict[str, asyncio.Task[None]] = {}
        self._progress: dict[str, asyncio.Task[None]] = {}
        self._progress_at: dict[str, float] = {}
        notifier.listeners.append(self._changed)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Pick up jobs with a webhook whose final message is not delivered yet (after a restart too)."""
        self._loop = loop
        with Session(self.store.engine) as session:
            rows = session.exec(select(Job).where(col(Job.webhook).is_not(None))).all()
        for job in rows:
            if isinstance(job.webhook, dict) and job.webhook.get("state") == "pending":
                self._watched.add(job.id)
                self._consider(job.id)

    async def close(self) -> None:
        """Stop sending; undelivered final messages stay pending for the next start."""
        tasks = [*self._final.values(), *self._progress.values()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._loop = None

    def watch(self, job: Job) -> None:
        """Follow a newly queued job that has a webhook."""
        if job.webhook:
            self._watched.add(job.id)

    def _changed(self, job_id: str) -> None:
        # Called by the notifier from any thread; the work happens on the loop.
        if job_id in self._watched:
            call_soon(self._loop, self._consider, job_id)

    def _consider(self, job_id: str) -> None:
        if job_id in self._final:
            return
        job = self.store.find(job_id)
        if job is None or not isinstance(job.webhook, dict):
            self._watched.discard(job_id)
            return
        if job.terminal:
            self._final[job_id] = asyncio.ensure_future(self._send_final(job))
            return
        wanted = job.webhook.get("progress") and job.status == "running"
        due = time.monotonic() - self._progress_at.get(job_id, float("-inf")) >= self.settings.webhook_progress_seconds
        if wanted and due and job_id not in self._progress:
            self._progress_at[job_id] = time.monotonic()
            self._progress[job_id] = asyncio.ensure_future(self._send_progress(job))

    async def _send_progress(self, job: Job) -> None:
        try:
            await self._send(job, "job.progress", f"msg_{job.id}_progress_{job.step}", attempts=1)
        finally:
            self._progress.pop(job.id, None)

    async def _send_final(self, job: Job) -> None:
        progress = self._progress.get(job.id)
        if progress is not None:  # a late progress message must not arrive after the final one
            with contextlib.suppress(Exception):
                await progress
        event = f"job.{job.status}"
        delivered = await self._send(job, event, f"msg_{job.id}_{job.status}")
        self._update(job.id, state="delivered" if delivered else "failed")
        self._watched.discard(job.id)
        self._progress_at.pop(job.id, None)

    async def _send(self, job: Job, event: str, message_id: str, attempts: int | None = None) -> bool:
        key = self.settings.webhook_key()
        url = job.webhook.get("url") if isinstance(job.webhook, dict) else None
        if key is None or not isinstance(url, str):
            self._record(job.id, {"event": event, "attempt": 0, "error": "webhooks are off: no LORAPOD_WEBHOOK_SECRET"})
            return False
        payload = {
            "type": event,
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "data": job_view(job),
        }
        return await deliver(
            url,
            payload,
            key=key,
            policy=policy_of(self.settings, attempts),
            event=event,
            message_id=message_id,
            record=lambda attempt: self._record(job.id, attempt),
        )

    def _record(self, job_id: str, attempt: dict[str, Any]) -> None:
        current = self.store.find(job_id)
        if current is None or not isinstance(current.webhook, dict):
            return
        attempts = [*list(current.webhook.get("attempts") or []), attempt][-MAX_RECORDED_ATTEMPTS:]
        self.store.update(job_id, webhook={**current.webhook, "attempts": attempts})

    def _update(self, job_id: str, **fields: Any) -> None:
        current = self.store.find(job_id)
        if current is not None and isinstance(current.webhook, dict):
            self.store.update(job_id, webhook={**current.webhook, **fields})
