"""The warm captioner: one long-lived caption_worker process per GPU slot, driven over JSON lines.

It mirrors the warm generator (gpu/generation.py) and shares its process helpers (gpu/generate_process.py):
the worker's output goes to the job's log file, one request runs at a time, a crashed worker fails only its
request, an idle one exits after idle_seconds, and a training takes it down to have the GPU to itself.
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

from gpu import caption_protocol as wire
from gpu.generate_process import (
    REAP_SECONDS,
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

CAPTION_WORKER_SCRIPT = Path(__file__).resolve().with_name("caption_worker.py")


@dataclass(frozen=True)
class CaptioningRequest(wire.CaptionParams):
    """What to caption: these images (absolute paths), each into its same-stem .txt."""

    job_id: str
    images: list[Path]


@dataclass(frozen=True)
class CaptioningOutcome:
    """How a request ended, the caption files it wrote, the images it skipped, and the model load counter.

    skipped: images that had a caption (or were gone) by the time they were reached; unreadable: images that
    could not be decoded, left without a caption.
    """

    status: Literal["completed", "cancelled", "failed"]
    written: list[Path]
    skipped: int
    error: str | None
    loads: int
    unreadable: list[Path] = dataclasses.field(default_factory=list)


class WarmCaptioner:
    """Keeps one caption_worker alive between requests so a captioning model is loaded once, not per job."""

    def __init__(
        self,
        *,
        python: str,
        gpu: str | None,
        log_path_for: Callable[[str], Path],
        extra_env: Mapping[str, str] | None = None,
        idle_seconds: float = 300.0,
        cwd: Path | None = None,
        cancel_grace: float = 60.0,
        start_timeout: float = 600.0,
    ) -> None:
        self.python = python
        self.gpu = gpu
        self.idle_seconds = idle_seconds
        self.cwd = cwd or CAPTION_WORKER_SCRIPT.parent.parent
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
        # Bound now when made on the loop, so a cancel arriving before the first request still reaches it.
        self._loop: asyncio.AbstractEventLoop | None = None
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

    async def caption(
        self,
        request: CaptioningRequest,
        on_progress: Callable[[Progress], None] | None = None,
        on_caption: Callable[[Path, str], None] | None = None,
    ) -> CaptioningOutcome:
        """Run one request on the warm worker; never raises for a worker failure, it returns status failed."""
        self._loop = asyncio.get_running_loop()
        self._cancel_requested = False
        async with self._lock:
            self._stop_idle_timer()
            log_path = self._log_path_for(request.job_id)
            try:
                return await self._run(request, log_path, on_progress, on_caption)
            except asyncio.CancelledError:
                self._discard_worker()  # its late events would reach the next request
                raise
            except Exception as exc:
                log.exception("captioning %s failed inside lorapod", request.job_id)
                note(log_path, f"captioning failed inside lorapod: {exc}")
                self._discard_worker()
                return CaptioningOutcome("failed", [], 0, f"captioning failed inside lorapod: {exc}", self.loads)
            finally:
                self._in_flight = False
                self._cancel_requested = False
                self._cancel_kill_timer()
                self._start_idle_timer()

    def cancel(self) -> None:
        """Stop the current request before its next image; the worker stays warm. Safe from any thread."""
        call_soon(self._loop, self._cancel)

    def _cancel(self) -> None:
        self._cancel_requested = True
        if not (self._in_flight and self.running):
            return
        with contextlib.suppress(WorkerGone):
            send(self._proc, {wire.OP: wire.OP_CANCEL})
        if self._kill_timer is None and self._proc is not None:
            # A model still loading does not look at the flag: past the grace, the worker goes.
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
        request: CaptioningRequest,
        log_path: Path,
        on_progress: Callable[[Progress], None] | None,
        on_caption: Callable[[Path, str], None] | None,
    ) -> CaptioningOutcome:
        written: list[Path] = []
        try:
            await self._ensure_worker(log_path)
            if self._cancel_requested:
                return CaptioningOutcome("cancelled", [], 0, None, self.loads)
            self._in_flight = True
            send(self._proc, self._request_line(request, log_path))
            await drain(self._proc)
            return await self._follow(request, written, on_progress, on_caption)
        except WorkerGone:
            return await self._worker_died(log_path, written)
        except StartFailed as exc:
            note(log_path, str(exc))
            return CaptioningOutcome("failed", [], 0, str(exc), self.loads)

    async def _follow(
        self,
        request: CaptioningRequest,
        written: list[Path],
        on_progress: Callable[[Progress], None] | None,
        on_caption: Callable[[Path, str], None] | None,
    ) -> CaptioningOutcome:
        """Read events until the request's done or error."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            event = await next_event(self._proc)
            if event.get("id") != request.job_id:
                continue
            kind = event.get(wire.EVENT)
            if kind == wire.EVENT_LOADING:
                self.loaded_model = None
            elif kind == wire.EVENT_PROGRESS and on_progress is not None:
                done = int(event.get("index", 0))
                total = int(event.get("total") or len(request.images))
                elapsed = loop.time() - started
                rate = done / elapsed if done and elapsed > 0 else None
                eta = (total - done) / rate if rate else None
                _safely(
                    on_progress, Progress(step=done, total=total, rate=rate, elapsed_seconds=elapsed, eta_seconds=eta)
                )
            elif kind == wire.EVENT_CAPTION:
                path = Path(event["path"])
                written.append(path)
                if on_caption is not None:
                    _safely(on_caption, path, str(event.get("caption", "")))
            elif kind == wire.EVENT_DONE:
                self.loads = int(event.get("loads", self.loads))
                self.loaded_model = event.get("model")
                cancelled = event.get("status") == wire.STATUS_CANCELLED
                skipped = int(event.get("skipped", 0))
                unreadable = [Path(p) for p in event.get("unreadable") or []]
                status: Literal["completed", "cancelled"] = "cancelled" if cancelled else "completed"
                return CaptioningOutcome(status, written, skipped, None, self.loads, unreadable)
            elif kind == wire.EVENT_ERROR:
                self.loads = int(event.get("loads", self.loads))
                self.loaded_model = event.get("model")
                message = str(event.get("message") or "captioning failed")
                return CaptioningOutcome("failed", written, 0, message, self.loads)

    def _request_line(self, request: CaptioningRequest, log_path: Path) -> dict[str, Any]:
        params = {f.name: getattr(request, f.name) for f in dataclasses.fields(wire.CaptionParams)}
        return wire.CaptionRequest(
            **params, id=request.job_id, images=[str(p) for p in request.images], log_path=str(log_path)
        ).to_message()

    # -- the worker process ----------------------------------------------------------------------

    async def _ensure_worker(self, log_path: Path) -> None:
        """A live worker that has said ready; starts one if there is none (or the last one died idle)."""
        if self._proc is not None and self._proc.returncode is not None:
            note(log_path, f"the idle caption worker {describe_signal(self._proc.returncode)}")
            kill_group(self._proc)
            self._forget_worker()
        if self._proc is not None:
            return
        env = gpu_env(os.environ, self.gpu, self._extra_env)
        self._proc = await spawn_worker(
            self.python, cwd=self.cwd, env=env, log_path=log_path, script=CAPTION_WORKER_SCRIPT, label="caption worker"
        )
        self.loads = 0
        self.loaded_model = None
        note(log_path, f"started caption worker pid {self._proc.pid}")
        await wait_ready(self._proc, self.start_timeout)

    async def _worker_died(self, log_path: Path, written: list[Path]) -> CaptioningOutcome:
        """The worker ended mid-request: reap it, say how in the log, and fail (or cancel) the request."""
        proc = self._proc
        how = "ended"
        returncode: int | None = None
        if proc is not None:
            returncode = await reap(proc)
            how = describe_signal(returncode)
            kill_group(proc)
            self._forget_worker()
        if self._stopping:
            message = f"the caption worker was shut down ({how})"
        else:
            message = f"the caption worker died ({how})"
            if returncode is not None and returncode > 0 and (cause := last_error_line(log_path)):
                message += f": {cause}"
        note(log_path, message)
        if self._cancel_requested:
            return CaptioningOutcome("cancelled", written, 0, None, self.loads)
        return CaptioningOutcome("failed", written, 0, message, self.loads)

    def _forget_worker(self) -> None:
        self._proc = None
        self.loaded_model = None

    def _discard_worker(self) -> None:
        if self._proc is not None:
            kill_group(self._proc)
        self._forget_worker()

    def _cancel_kill_timer(self) -> None:
        if self._kill_timer is not None:
            self._kill_timer.cancel()
            self._kill_timer = None

    # -- idling ----------------------------------------------------------------------------------

    def _start_idle_timer(self) -> None:
        if self.running:
            self._idle_task = asyncio.get_running_loop().create_task(self._shutdown_when_idle())

    def _stop_idle_timer(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None

    async def _shutdown_when_idle(self) -> None:
        await asyncio.sleep(self.idle_seconds)
        async with self._lock:  # a request arriving now waits, then starts a fresh worker
            if self._idle_task is asyncio.current_task():
                log.info("caption worker idle for %.0f s: shutting it down", self.idle_seconds)
                await self.shutdown()


def _safely(callback: Callable[..., None], *values: Any) -> None:
    """Run a caller's callback; its failure is logged and does not end the request."""
    try:
        callback(*values)
    except Exception:
        log.exception("a captioning callback failed")
