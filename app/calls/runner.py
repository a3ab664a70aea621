"""Runs the /v2 routes' calls on the server's event loop through the contract's dispatcher, with a /stream backlog."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from functools import partial
from typing import Any

from app.calls.store import Call, CallStatus, CallStore, call_view, outcome, timed_out_error
from app.calls.webhooks import CallWebhooks
from core.contract.dispatcher import dispatch, is_instant
from core.errors import Conflict, NotFound
from core.jobs.rows import utcnow
from core.jobs.service import JobService

log = logging.getLogger("lorapod.runpod")

# Calls running at once; beyond this they wait IN_QUEUE (and /purge-queue can drop them).
MAX_CONCURRENT_CALLS = 8
# Progress updates kept for /stream per call when nobody reads them.
STREAM_BACKLOG = 1000


class CallRunner:
    """Runs calls on the server's event loop through the dispatcher and keeps their /stream backlog."""

    def __init__(self, service: JobService, *, concurrency: int = MAX_CONCURRENT_CALLS) -> None:
        settings = service.settings
        self.service = service
        self.store = CallStore(
            service.engine,
            worker_id=settings.worker_id,
            run_retention_seconds=settings.result_retention_run_seconds,
            runsync_retention_seconds=settings.result_retention_runsync_seconds,
            on_end=lambda status: service.metrics.calls_finished.labels(status).inc(),
            workspace=service.workspace,
        )
        self.tasks: dict[str, asyncio.Task[Call | None]] = {}
        self.webhooks = CallWebhooks(self.store, settings)
        self.streams: dict[str, deque[dict[str, Any]]] = {}
        self._slots = asyncio.Semaphore(concurrency)
        failed = self.store.fail_interrupted()
        if failed:
            log.warning("%d RunPod-style calls were unfinished when the server stopped: marked FAILED", len(failed))

    async def submit(
        self,
        payload: dict[str, Any],
        *,
        sync: bool,
        execution_timeout_ms: int | None = None,
        webhook: str | None = None,
    ) -> Call:
        """Store a new call and start running it in the background (its webhook is told when it ends).

        Returns once the call is committed: an acknowledged call survives the server being killed.
        """
        row = self.store.new(payload, sync=sync, execution_timeout_ms=execution_timeout_ms, webhook=webhook)
        await self.store.add(row)
        call = Call.model_construct(**row)
        self._spawn(call, payload)
        return call

    async def run_sync(
        self,
        payload: dict[str, Any],
        *,
        wait_seconds: float,
        execution_timeout_ms: int | None = None,
        webhook: str | None = None,
    ) -> dict[str, Any]:
        """/runsync: the call's final state in the /status shape, or its current one if it outlasts wait_seconds.

        An instant call (health, listings, ...) runs here and now, outside the slots, and is stored once,
        finished: one write instead of three and a read. It cannot outlast the least wait (1 s) but by a fault,
        so the wait does not apply to it; its executionTimeout does.
        """
        if not is_instant(payload):
            call = await self.submit(payload, sync=True, execution_timeout_ms=execution_timeout_ms, webhook=webhook)
            run = self.tasks[call.id]
            await asyncio.wait({run}, timeout=wait_seconds)
            # A call that ended here is answered from the result in hand: a chunk's 10 MB is not read back.
            finished = run.result() if run.done() and not run.cancelled() else None
            return call_view(finished or self.store.answer(call.id))
        created = utcnow()
        timeout = execution_timeout_ms / 1000 if execution_timeout_ms else None
        try:
            ended = outcome(await asyncio.wait_for(dispatch(self.service, payload), timeout))
        except TimeoutError:
            ended = CallStatus.TIMED_OUT, None, timed_out_error(execution_timeout_ms)
        row = self.store.new(
            payload,
            sync=True,
            execution_timeout_ms=execution_timeout_ms,
            webhook=webhook,
            created_at=created,
            ended=ended,
        )
        await self.store.add(row)
        if webhook:
            self.webhooks.send(Call.model_construct(**row))
        return call_view(row)

    def retry(self, call_id: str) -> Call:
        """Queue a failed call again with its stored input."""
        call = self.store.retry(call_id)
        self._spawn(call, call.input)
        return call

    def cancel(self, call_id: str) -> Call:
        """Cancel a queued or running call and the lorapod process it waits on."""
        before = self.store.get(call_id)
        call = self.store.cancel(call_id)
        if before.final or call.status != CallStatus.CANCELLED:
            return call
        self._stop_process(call)
        task = self.tasks.get(call_id)
        if task is not None:
            task.cancel()
        return call

    def purge_queue(self) -> int:
        """Drop the calls still waiting for a slot."""
        removed = self.store.purge_queue()
        for call_id in removed:
            task = self.tasks.pop(call_id, None)
            if task is not None:
                task.cancel()
            self.streams.pop(call_id, None)
        return len(removed)

    def drain_stream(self, call_id: str) -> list[dict[str, Any]]:
        """The progress updates since the last read."""
        backlog = self.streams.get(call_id)
        if not backlog:
            return []
        items = list(backlog)
        backlog.clear()
        return items

    def _stop_process(self, call: Call) -> None:
        if call.process_id:
            with contextlib.suppress(Conflict, NotFound):  # the process ended on its own meanwhile
                self.service.cancel(call.process_id)

    def _spawn(self, call: Call, payload: dict[str, Any]) -> None:
        self.streams[call.id] = deque(maxlen=STREAM_BACKLOG)
        self.tasks[call.id] = asyncio.create_task(self._run(call, payload), name=f"runpod-call-{call.id}")

    async def _run(self, call: Call, payload: dict[str, Any]) -> Call | None:
        """Run a queued call to its end; the call as it ended when it finished (None when it did not)."""
        call_id, execution_timeout_ms = call.id, call.execution_timeout_ms
        ended: Call | None = None
        try:
            async with self._slots:
                started_at = await self.store.start(call_id)
                if started_at is None:
                    return None  # cancelled or purged while it waited
                # stop_on_cancel=False: a task is also cancelled when the server shuts down, and that must not
                # stop trainings; /cancel and the timeout stop the process themselves.
                running = dispatch(
                    self.service, payload, progress=partial(self._progress, call_id), stop_on_cancel=False
                )
                timeout = execution_timeout_ms / 1000 if execution_timeout_ms else None
                try:
                    result = await asyncio.wait_for(running, timeout)
                except TimeoutError:
                    if await self.store.time_out(call_id, execution_timeout_ms or 0):
                        self._stop_process(self.store.get(call_id))
                    return None
                ended = await self.store.finish(call, result, started_at=started_at)
                return ended
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("RunPod-style call %s failed", call_id)
            await self.store.fail(call_id, f"internal error: {type(exc).__name__}: {exc}")
            return None
        finally:
            if self.tasks.get(call_id) is asyncio.current_task():
                del self.tasks[call_id]
            self._forget_stream_later(call_id)
            if call.webhook:  # only then is the ended call needed; read back when not in hand
                if ended is not None:
                    self.webhooks.send(ended)
                else:
                    self.webhooks.announce(call_id)

    def _progress(self, call_id: str, update: dict[str, Any]) -> None:
        process_id = update.get("process_id")
        self.store.report(call_id, update, process_id=process_id if isinstance(process_id, str) else None)
        backlog = self.streams.get(call_id)
        if backlog is not None:
            backlog.append({"output": update})

    def _forget_stream_later(self, call_id: str) -> None:
        backlog = self.streams.get(call_id)
        if backlog is None:
            return
        settings = self.service.settings
        keep = max(settings.result_retention_run_seconds, settings.result_retention_runsync_seconds)

        def forget() -> None:
            if self.streams.get(call_id) is backlog:  # not a retry's fresh backlog
                del self.streams[call_id]

        asyncio.get_running_loop().call_later(keep, forget)
