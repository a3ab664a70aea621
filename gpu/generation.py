"""The warm generator: one long-lived generate_worker process per GPU slot, driven over JSON lines.

Logs: the worker's stdout and stderr go to a log file, never through a pipe we must drain. With a per-job
`log_path_for`, the worker is started writing to the first job's log and each request carries its job's
log path, so the worker moves its output there (fd-level, so native libraries follow) for that request and
after it; lorapod's own notes (worker started, worker died) are appended to the same file by this client.
With a single fixed Path, everything goes to that one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gpu import generate_protocol as wire
from gpu.generate_process import (
    REAP_SECONDS,
    WORKER_SCRIPT,
    StartFailed,
    WorkerGone,
    drain,
    kill_group,
    last_error_line,
    next_event,
    note,
    reap,
    send,
    spawn_worker,
    wait_ready,
)
from gpu.loop import call_soon
from gpu.process import describe_signal, gpu_env
from gpu.progress import Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerationRequest(wire.GenerateParams):
    """What to generate: prompts on a base model with an optional LoRA, into output_dir."""

    job_id: str
    lora_path: Path | None
    output_dir: Path

    @property
    def total_images(self) -> int:
        """Images this request makes: num_images for each prompt."""
        return self.num_images * len(self.prompts)


@dataclass(frozen=True)
class GenerationOutcome:
    """How a request ended, the images it wrote, and the worker's base-model load counter."""

    status: Literal["completed", "cancelled", "failed"]
    images: list[Path]
    error: str | None
    loads: int


class WarmGenerator:
    """Keeps one generate_worker alive between requests so a base model is loaded once, not per job.

    One request runs at a time. A worker that crashes fails only its request; the next starts a fresh one.
    An idle worker exits after idle_seconds. Meant to be used from a single event loop.
    """

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
        self.cwd = cwd or WORKER_SCRIPT.parent.parent
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

    @property
    def running(self) -> bool:
        """Whether a worker process is alive."""
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        """The worker's pid (also its process group id), None when none runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    # -- requests ------------------------------------------------------------------------------------

    async def generate(
        self,
        request: GenerationRequest,
        on_progress: Callable[[Progress], None] | None = None,
        on_image: Callable[[Path], None] | None = None,
    ) -> GenerationOutcome:
        """Run one request on the warm worker; never raises for a worker failure, it returns status failed."""
        self._loop = asyncio.get_running_loop()
        self._cancel_requested = False
        async with self._lock:
            self._stop_idle_timer()
            log_path = self._log_path(request.job_id)
            try:
                return await self._run(request, log_path, on_progress, on_image)
            except asyncio.CancelledError:
                # The events of an abandoned request would reach the next one: this worker has to go.
                self._discard_worker()
                raise
            except Exception as exc:
                log.exception("generation %s failed inside lorapod", request.job_id)
                note(log_path, f"generation failed inside lorapod: {exc}")
                self._discard_worker()
                return GenerationOutcome("failed", [], f"generation failed inside lorapod: {exc}", self.loads)
            finally:
                self._in_flight = False
                self._cancel_requested = False  # it was this request's; one waiting for the lock starts afresh
                self._cancel_kill_timer()
                self._start_idle_timer()

    def cancel(self) -> None:
        """Stop the current request (running, or still starting the worker) at its next denoising step.

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
            send(self._proc, {wire.OP: wire.OP_CANCEL})
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
                    send(proc, {wire.OP: wire.OP_SHUTDOWN})
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

    # -- one request -----------------------------------------------------------------------------

    async def _run(
        self,
        request: GenerationRequest,
        log_path: Path,
        on_progress: Callable[[Progress], None] | None,
        on_image: Callable[[Path], None] | None,
    ) -> GenerationOutcome:
        """Start the worker if needed, send the request, follow its events to the end."""
        images: list[Path] = []
        try:
            await self._ensure_worker(log_path)
            if self._cancel_requested:
                return GenerationOutcome("cancelled", [], None, self.loads)
            self._in_flight = True
            send(self._proc, self._request_line(request, log_path))
            await drain(self._proc)
            return await self._follow(request, images, on_progress, on_image)
        except WorkerGone:
            return await self._worker_died(log_path, images)
        except StartFailed as exc:
            note(log_path, str(exc))
            return GenerationOutcome("failed", [], str(exc), self.loads)

    async def _follow(
        self,
        request: GenerationRequest,
        images: list[Path],
        on_progress: Callable[[Progress], None] | None,
        on_image: Callable[[Path], None] | None,
    ) -> GenerationOutcome:
        """Read events until the request's done or error."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        rate_from: tuple[float, int] | None = None  # first progress seen: rate excludes the model load
        while True:
            event = await next_event(self._proc)
            if event.get("id") != request.job_id:
                continue  # a stray line (e.g. about a malformed request); not about this one
            kind = event.get(wire.EVENT)
            if kind == wire.EVENT_LOADING:
                self.loaded_model = None
            elif kind == wire.EVENT_PROGRESS and on_progress is not None:
                now = loop.time()
                progress = self._progress(event, request, now - started, rate_from, now)
                if rate_from is None:
                    rate_from = (now, progress.step)
                _safely(on_progress, progress)
            elif kind == wire.EVENT_IMAGE:
                path = Path(event["path"])
                images.append(path)
                if on_image is not None:
                    _safely(on_image, path)
            elif kind == wire.EVENT_DONE:
                self.loads = int(event.get("loads", self.loads))
                self.loaded_model = request.base_model
                cancelled = event.get("status") == wire.STATUS_CANCELLED
                return GenerationOutcome("cancelled" if cancelled else "completed", images, None, self.loads)
            elif kind == wire.EVENT_ERROR:
                self.loads = int(event.get("loads", self.loads))
                self.loaded_model = event.get("base_model")
                return GenerationOutcome("failed", images, str(event.get("message") or "generation failed"), self.loads)

    @staticmethod
    def _progress(
        event: dict[str, Any],
        request: GenerationRequest,
        elapsed: float,
        rate_from: tuple[float, int] | None,
        now: float,
    ) -> Progress:
        """The worker's (image, step) as overall steps over all images, with speed and time left."""
        steps = int(event.get("steps") or request.steps)
        images = int(event.get("images") or request.total_images)
        step = int(event.get("image", 0)) * steps + int(event.get("step", 0))
        total = images * steps
        rate = eta = None
        if rate_from is not None and now > rate_from[0] and step > rate_from[1]:
            rate = (step - rate_from[1]) / (now - rate_from[0])
            eta = (total - step) / rate
        return Progress(step=step, total=total, rate=rate, elapsed_seconds=elapsed, eta_seconds=eta)

    def _request_line(self, request: GenerationRequest, log_path: Path) -> dict[str, Any]:
        """The generate op for the worker."""
        params = {f.name: getattr(request, f.name) for f in dataclasses.fields(wire.GenerateParams)}
        return wire.GenerateRequest(
            **params,
            id=request.job_id,
            lora_path=str(request.lora_path) if request.lora_path else None,
            output_dir=str(request.output_dir),
            log_path=str(log_path) if callable(self._log_path_for) else None,
        ).to_message()

    # -- the worker process ----------------------------------------------------------------------

    async def _ensure_worker(self, log_path: Path) -> None:
        """A live worker that has said ready; starts one if there is none (or the last one died idle)."""
        if self._proc is not None and self._proc.returncode is not None:
            note(log_path, f"the idle generation worker {describe_signal(self._proc.returncode)}")
            kill_group(self._proc)
            self._forget_worker()
        if self._proc is not None:
            return
        env = gpu_env(os.environ, self.gpu, self._extra_env)
        self._proc = await spawn_worker(self.python, cwd=self.cwd, env=env, log_path=log_path)
        self.loads = 0
        self.loaded_model = None
        note(log_path, f"started generation worker pid {self._proc.pid}")
        await wait_ready(self._proc, self.start_timeout)

    async def _worker_died(self, log_path: Path, images: list[Path]) -> GenerationOutcome:
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
            message = f"the generation worker was shut down ({how})"
        else:
            message = f"the generation worker died ({how})"
            # An uncaught Python exception exits with status 1 after printing it; a signal leaves no such line.
            if returncode is not None and returncode > 0 and (cause := last_error_line(log_path)):
                message += f": {cause}"
        note(log_path, message)
        if self._cancel_requested:
            return GenerationOutcome("cancelled", images, None, self.loads)
        return GenerationOutcome("failed", images, message, self.loads)

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
                log.info("generation worker idle for %.0f s: shutting it down", self.idle_seconds)
                await self.shutdown()

    # -- logs ------------------------------------------------------------------------------------

    def _log_path(self, job_id: str) -> Path:
        """The log file for a job's request."""
        return Path(self._log_path_for(job_id) if callable(self._log_path_for) else self._log_path_for)


def _safely(callback: Callable[[Any], None], value: Any) -> None:
    """Run a caller's callback; its failure is logged and does not end the request."""
    try:
        callback(value)
    except Exception:
        log.exception("a generation callback failed")
