"""The warm captioner: one long-lived caption_worker process per GPU slot, driven over JSON lines.

It shares the warm generator's worker lifecycle (gpu/warm_worker.py, gpu/generate_process.py):
the worker's output goes to the job's log file, one request runs at a time, a crashed worker fails only its
request, an idle one exits after idle_seconds, and a training takes it down to have the GPU to itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

from gpu import caption_protocol as wire
from gpu.generate_process import next_event
from gpu.progress import Progress
from gpu.warm_worker import Status, WarmWorker

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


class WarmCaptioner(WarmWorker[CaptioningOutcome]):
    """Keeps one caption_worker alive between requests so a captioning model is loaded once, not per job."""

    script = CAPTION_WORKER_SCRIPT
    protocol: ClassVar[ModuleType] = wire
    label = "caption worker"
    activity = "captioning"
    log = logging.getLogger(__name__)
    bind_loop_at_creation = True

    async def caption(
        self,
        request: CaptioningRequest,
        on_progress: Callable[[Progress], None] | None = None,
        on_caption: Callable[[Path, str], None] | None = None,
    ) -> CaptioningOutcome:
        """Run one request on the warm worker; never raises for a worker failure, it returns status failed."""
        return await self._serve(
            request.job_id,
            lambda log_path: self._request_line(request, log_path),
            lambda written: self._follow(request, written, on_progress, on_caption),
        )

    def _outcome(self, status: Status, items: list[Path], error: str | None) -> CaptioningOutcome:
        return CaptioningOutcome(status, items, 0, error, self.loads)

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
                self._safely(
                    on_progress, Progress(step=done, total=total, rate=rate, elapsed_seconds=elapsed, eta_seconds=eta)
                )
            elif kind == wire.EVENT_CAPTION:
                path = Path(event["path"])
                written.append(path)
                if on_caption is not None:
                    self._safely(on_caption, path, str(event.get("caption", "")))
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
