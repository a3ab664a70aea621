"""The lifecycle shared by the warm workers (generation, captioning): one long-lived child per GPU slot.

Logs: the worker's stdout and stderr go to a log file, never through a pipe we must drain; lorapod's own notes
(worker started, worker died) are appended to the same file. One request runs at a time; a worker that
crashes fails only its request and the next starts a fresh one; an idle worker exits after idle_seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Generic, Literal, TypeVar

from gpu.generate_process import (
    REAP_SECONDS,
    StartFailed,
    WorkerGone,
    drain,
    kill_group,
    last_error_line,
    note,
    reap,
    send,
    spawn_worker,
    wait_ready,
)
from gpu.loop import call_soon
from gpu.process import describe_signal, gpu_env

OutcomeT = TypeVar("OutcomeT")
Status = Literal["completed", "cancelled", "failed"]


class WarmWorker(Generic[OutcomeT]):
    """Keeps one worker process alive between requests; subclasses say what a request is and how it ends.

    Meant to be used from a single event loop.
    """

    # What a subclass names: its worker script, its protocol module, its words in logs, its logger.
    script: ClassVar[Path]
    protocol: ClassVar[ModuleType]
    label: ClassVar[str]  # "generation worker"
    activity: ClassVar[str]  # "generation"
    log: ClassVar[logging.Logger]
    # Bound to the running loop when made on it, so a cancel arriving before the first request still reaches it.
    bind_loop_at_creation: ClassVar[bool] = False

    def __init__(
        self,
        *,
        python: str,
        gpu: str | None,
        log_path_for: Callable[[str], Path] | Path,
        extra_env: Mapping[str, str] | None = None,
        idle_seconds: float = 300.0,
        cwd: Path | None = None,
        cancel_grace: float = 60.0,
        start_timeout: float = 600.0,
    ) -> None:
        self.python = python
        self.gpu = gpu
        self.idle_seconds = idle_seconds
        self.cwd = cwd or self.script.parent.parent
        self.cancel_grace = cancel_grace
        self.start_timeout = start_timeout
        self.loaded_model: str | None = None
        self.loads = 0
        self._log_path_for = log_path_for
        self._extra_env = dict(extra_env or {})
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._idle_task: asyncio.Task[None] | None = None
        self._kill_timer: asyncio.TimerHandle | None = None
        self._in_flight = False
        self._cancel_requested = False
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        if self.bind_loop_at_creation:
            with contextlib.suppress(RuntimeError):
                self._loop = asyncio.get_running_loop()

    @property
    def running(self) -> bool:
        """Whether a worker process is alive."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The worker's pid (also its process group id), None when none runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    def _outcome(self, status: Status, items: list[Path], error: str | None) -> OutcomeT:
        """A request's outcome with the files it wrote so far; the subclass's own type."""
        raise NotImplementedError

    # -- requests ------------------------------------------------------------------------------------

    async def _serve(
        self,
        job_id: str,
        request_line: Callable[[Path], dict[str, Any]],
        follow: Callable[[list[Path]], Awaitable[OutcomeT]],
    ) -> OutcomeT:
        """Run one request on the warm worker; never raises for a worker failure, it returns status failed."""
        self._loop = asyncio.get_running_loop()
        self._cancel_requested = False
        async with self._lock:
            self._stop_idle_timer()
            log_path = self._log_path(job_id)
            try:
                return await self._run(log_path, request_line, follow)
            except asyncio.CancelledError:
                # The events of an abandoned request would reach the next one: this worker has to go.
                self._discard_worker()
                raise
            except Exception as exc:
                self.log.exception("%s %s failed inside lorapod", self.activity, job_id)
                note(log_path, f"{self.activity} failed inside lorapod: {exc}")
                self._discard_worker()
                return self._outcome("failed", [], f"{self.activity} failed inside lorapod: {exc}")
            finally:
                self._in_flight = False
                self._cancel_requested = False  # it was this request's; one waiting for the lock starts afresh
                self._cancel_kill_timer()
                self._start_idle_timer()

    async def _run(
        self,
        log_path: Path,
        request_line: Callable[[Path], dict[str, Any]],
        follow: Callable[[list[Path]], Awaitable[OutcomeT]],
    ) -> OutcomeT:
        """Start the worker if needed, send the request, follow its events to the end."""
        items: list[Path] = []
        try:
            await self._ensure_worker(log_path)
            if self._cancel_requested:
                return self._outcome("cancelled", [], None)
            self._in_flight = True
            send(self._proc, request_line(log_path))
            await drain(self._proc)
            return await follow(items)
        except WorkerGone:
            return await self._worker_died(log_path, items)
        except StartFailed as exc:
            note(log_path, str(exc))
            return self._outcome("failed", [], str(exc))

    def cancel(self) -> None:
        """Stop the current request (running, or still starting the worker) at the worker's next check.

        The worker stays warm. Should it not answer within cancel_grace seconds (a model still loading), it is
        killed and the request still ends as cancelled. With no request in progress it does nothing. Safe to
        call from another thread.
        """
        call_soon(self._loop, self._cancel)

    def _cancel(self) -> None:
        """What cancel does, on the loop's thread."""
        self._cancel_requested = True
        if not (self._in_flight and self.running):
            return
        with contextlib.suppress(WorkerGone):
            send(self._proc, {self.protocol.OP: self.protocol.OP_CANCEL})
        if self._kill_timer is None and self._proc is not None:
            # Bound to this worker: the request then sees the end of its stream and ends as cancelled.
            self._kill_timer = asyncio.get_running_loop().call_later(self.cancel_grace, kill_group, self._proc)

    async def shutdown(self, grace: float = 10.0) -> None:
        """Ask the worker to exit, wait up to grace seconds, then kill its process group."""
        if self._idle_task is not None and self._idle_task is not asyncio.current_task():
            self._idle_task.cancel()
        self._idle_task = None
        proc = self._proc
        if proc is None:
            return
        self._stopping = True
        try:
            if proc.returncode is None:
                with contextlib.suppress(WorkerGone):
                    send(proc, {self.protocol.OP: self.protocol.OP_SHUTDOWN})
                if proc.stdin is not None:
                    proc.stdin.close()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), grace)
            kill_group(proc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), REAP_SECONDS)
        finally:
            if self._proc is proc and not self._in_flight:
                self._forget_worker()
            self._stopping = False

    def _safely(self, callback: Callable[..., None], *values: Any) -> None:
        """Run a caller's callback; its failure is logged and does not end the request."""
        try:
            callback(*values)
        except Exception:
            self.log.exception("a %s callback failed", self.activity)

    # -- the worker process ----------------------------------------------------------------------

    async def _ensure_worker(self, log_path: Path) -> None:
        """A live worker that has said ready; starts one if there is none (or the last one died idle)."""
        if self._proc is not None and self._proc.returncode is not None:
            note(log_path, f"the idle {self.label} {describe_signal(self._proc.returncode)}")
            kill_group(self._proc)
            self._forget_worker()
        if self._proc is not None:
            return
        env = gpu_env(os.environ, self.gpu, self._extra_env)
        self._proc = await spawn_worker(
            self.python, cwd=self.cwd, env=env, log_path=log_path, script=self.script, label=self.label
        )
        self.loads = 0
        self.loaded_model = None
        note(log_path, f"started {self.label} pid {self._proc.pid}")
        await wait_ready(self._proc, self.start_timeout)

    async def _worker_died(self, log_path: Path, items: list[Path]) -> OutcomeT:
        """The worker ended mid-request: reap it, say how in the log, and fail (or cancel) the request."""
        proc = self._proc
        how = "ended"
        returncode: int | None = None
        if proc is not None:
            returncode = await reap(proc)
            how = describe_signal(returncode)
            kill_group(proc)  # anything it started
            self._forget_worker()
        if self._stopping:
            message = f"the {self.label} was shut down ({how})"
        else:
            message = f"the {self.label} died ({how})"
            # An uncaught Python exception exits with status 1 after printing it; a signal leaves no such line.
            if returncode is not None and returncode > 0 and (cause := last_error_line(log_path)):
                message += f": {cause}"
        note(log_path, message)
        if self._cancel_requested:
            return self._outcome("cancelled", items, None)
        return self._outcome("failed", items, message)

    def _forget_worker(self) -> None:
        """No worker any more: the next request starts a fresh one."""
        self._proc = None
        self.loaded_model = None

    def _discard_worker(self) -> None:
        """Kill the worker without a say and forget it; asyncio reaps it in the background."""
        if self._proc is not None:
            kill_group(self._proc)
        self._forget_worker()

    def _cancel_kill_timer(self) -> None:
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None

    # -- idling ----------------------------------------------------------------------------------

    def _start_idle_timer(self) -> None:
        """After a request: shut the worker down if no other comes within idle_seconds."""
        if self.running:
            self._idle_task = asyncio.get_running_loop().create_task(self._shutdown_when_idle())

    def _stop_idle_timer(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None

    async def _shutdown_when_idle(self) -> None:
        await asyncio.sleep(self.idle_seconds)
        # Under the lock, so a request arriving now waits and then starts a fresh worker.
        async with self._lock:
            if self._idle_task is asyncio.current_task():
                self.log.info("%s idle for %.0f s: shutting it down", self.label, self.idle_seconds)
                await self.shutdown()

    # -- logs ------------------------------------------------------------------------------------

    def _log_path(self, job_id: str) -> Path:
        """The log file for a job's request."""
        return Path(self._log_path_for(job_id) if callable(self._log_path_for) else self._log_path_for)
