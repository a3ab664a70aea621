"""Server-Sent Events: the wire format, and one job's live feed of status, progress, artifacts and log lines.

Every event id is `<seq>-<log offset>`: seq grows by one per event (also across reconnects), and the log
offset is how far into the job's log the client has been sent. A reconnect with `Last-Event-ID` gets a fresh
snapshot of the job, then log lines from that offset on, so no log line is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from core.contract.views import progress_view
from core.errors import InvalidInput, LorapodError
from core.jobs.metrics_history import MetricsStore, log_phase, phase_of
from core.jobs.rows import Job, JobType
from core.jobs.service import JobService
from core.storage.logs import read_log

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}
_EVENT_ID = re.compile(r"(\d{1,18})-(\d{1,18})")
_DONE = object()


def sse_event(event: str, data: Any, *, event_id: str | None = None) -> str:
    """One event in the text/event-stream format; data that is not a string is sent as compact JSON."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"), default=str)
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in payload.split("\n"))
    return "\n".join(lines) + "\n\n"


def sse_comment(text: str) -> str:
    """A comment line: ignored by clients, it keeps proxies from closing an idle stream."""
    return f": {text}\n\n"


@dataclass
class EventCursor:
    """Where a client stands in a job's feed: events sent so far and bytes of the log sent so far."""

    seq: int = 0
    log_offset: int = 0

    @classmethod
    def parse(cls, last_event_id: str | None) -> EventCursor:
        """The cursor a Last-Event-ID names; a missing or foreign id starts from the beginning."""
        match = _EVENT_ID.fullmatch((last_event_id or "").strip())
        return cls(int(match[1]), int(match[2])) if match else cls()

    def next_id(self) -> str:
        """Advance to the next event and return its id."""
        self.seq += 1
        return f"{self.seq}-{self.log_offset}"


@dataclass
class FeedTiming:
    """How often the feed looks at the log, sends progress, and sends a keep-alive comment."""

    log_interval: float = 0.5
    progress_interval: float = 0.5
    keepalive: float = 15.0


class JobFeed:
    """Turns a job's changes and its growing log into SSE events (one feed per connected client)."""

    def __init__(
        self,
        service: JobService,
        job: Job,
        *,
        view: Callable[[Job], dict[str, Any]],
        artifact_view: Callable[[Job, dict[str, Any]], dict[str, Any]],
        cursor: EventCursor,
        timing: FeedTiming | None = None,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.service = service
        self.job = job
        self.view = view
        self.artifact_view = artifact_view
        self.cursor = cursor
        self.timing = timing or FeedTiming()
        self.stop = stop  # set when the server shuts down: the feed then ends with a `shutdown` event
        self._sent_status = job.status
        self._sent_progress = _progress_key(job)
        self._progress_at = 0.0
        self._known_artifacts = {str(a.get("name")) for a in job.artifacts}
        self._metrics_store = MetricsStore(service.engine)
        self._metrics_step = -1  # the newest loss point sent; a reconnect gets the whole series again
        self._log_phase: str | None = None
        self._sent_phase: str | None = None

    async def events(self) -> AsyncIterator[str]:
        """The feed: a snapshot, then changes as they happen, ending with the terminal status and `end`."""
        yield self._event("status", self.view(self.job))
        for text in self._metrics_events(self.job):
            yield text
        changes: asyncio.Queue[object] = asyncio.Queue()
        pump = asyncio.create_task(self._pump(changes), name=f"sse-{self.job.id}")
        last_sent = time.monotonic()
        try:
            while True:
                try:
                    item = await asyncio.wait_for(changes.get(), timeout=self.timing.log_interval)
                except TimeoutError:
                    item = None
                if isinstance(item, LorapodError):
                    yield self._event("error", item.to_dict())
                    return
                out = self._log_events(complete_only=True)
                if isinstance(item, Job):
                    self.job = item
                    out += self._change_events(item)
                for text in out:
                    yield text
                if item is _DONE:
                    break
                if self.stop is not None and self.stop.is_set():
                    yield self._event("shutdown", self._shutdown_data())
                    return
                if out:
                    last_sent = time.monotonic()
                elif time.monotonic() - last_sent >= self.timing.keepalive:
                    last_sent = time.monotonic()
                    yield sse_comment("keep-alive")
            for text in self._final_events():
                yield text
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _pump(self, changes: asyncio.Queue[object]) -> None:
        try:
            async for job in self.service.watch(self.job.id):
                await changes.put(job)
        except LorapodError as exc:  # e.g. the job was deleted while followed
            await changes.put(exc)
            return
        await changes.put(_DONE)

    def _shutdown_data(self) -> dict[str, Any]:
        return {
            "id": self.job.id,
            "status": self.job.status,
            "reason": "the server is shutting down; reconnect with Last-Event-ID to resume (running jobs keep running)",
        }

    def _event(self, name: str, data: Any) -> str:
        return sse_event(name, data, event_id=self.cursor.next_id())

    def _log_events(self, *, complete_only: bool) -> list[str]:
        if not self.job.log_path:
            return []
        path = self.service.workspace.root / self.job.log_path
        try:
            text, next_offset = read_log(path, self.cursor.log_offset, complete_only=complete_only)
        except InvalidInput:  # the log was replaced by a shorter one: start it over
            text, next_offset = read_log(path, 0, complete_only=complete_only)
        if next_offset == self.cursor.log_offset and not text:
            return []
        self.cursor.log_offset = next_offset
        lines = text.splitlines()
        self._log_phase = log_phase(lines, self._log_phase)
        return [self._event("log", {"lines": lines})] if lines else []

    def _change_events(self, job: Job) -> list[str]:
        out: list[str] = []
        for artifact in job.artifacts:
            name = str(artifact.get("name"))
            if name not in self._known_artifacts:
                self._known_artifacts.add(name)
                out.append(self._event("artifact", self.artifact_view(job, artifact)))
        if job.terminal:  # the terminal status goes last, after the log's final lines
            return out
        now = time.monotonic()
        if _progress_key(job) != self._sent_progress and now - self._progress_at >= self.timing.progress_interval:
            out.append(self._progress(job, now))
            out += self._metrics_events(job)
        if job.status != self._sent_status:
            self._sent_status = job.status
            out.append(self._event("status", self.view(job)))
        return out

    def _progress(self, job: Job, now: float) -> str:
        self._sent_progress = _progress_key(job)
        self._progress_at = now
        return self._event("progress", {"status": job.status, **progress_view(job)})

    def _metrics_events(self, job: Job) -> list[str]:
        """A `metrics` event with the loss points not sent yet and the trainer's phase, when either is new."""
        if job.type != JobType.train:
            return []
        points = self._metrics_store.get(job.id).since(self._metrics_step)
        phase = phase_of(job, self._log_phase)
        if not points and phase == self._sent_phase:
            return []
        self._sent_phase = phase
        if points:
            self._metrics_step = points[-1][0]
        data = {"phase": phase, "points": [{"step": s, "loss": loss, "lr": lr} for s, loss, lr in points]}
        return [self._event("metrics", data)]

    def _final_events(self) -> list[str]:
        job = self.service.store.find(self.job.id) or self.job
        self.job = job
        out = self._log_events(complete_only=False)
        out += self._change_events(job)
        if _progress_key(job) != self._sent_progress:
            out.append(self._progress(job, time.monotonic()))
        out += self._metrics_events(job)
        out.append(self._event("status", self.view(job)))
        out.append(self._event("end", {"id": job.id, "status": job.status, "error": job.error}))
        return out


def _progress_key(job: Job) -> tuple[object, ...]:
    return (job.step, job.total_steps, job.loss)
