"""The warm generator: one long-lived generate_worker process per GPU slot, driven over JSON lines.

Logs: the worker's stdout and stderr go to a log file, never through a pipe we must drain. With a per-job
`log_path_for`, the worker is started writing to the first job's log and each request carries its job's
log path, so the worker moves its output there (fd-level, so native libraries follow) for that request and
after it; lorapod's own notes (worker started, worker died) are appended to the same file by this client.
With a single fixed Path, everything goes to that one file.
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

from gpu import generate_protocol as wire
from gpu.generate_process import WORKER_SCRIPT, next_event
from gpu.progress import Progress
from gpu.warm_worker import Status, WarmWorker


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


class WarmGenerator(WarmWorker[GenerationOutcome]):
    """Keeps one generate_worker alive between requests so a base model is loaded once, not per job.

    One request runs at a time. A worker that crashes fails only its request; the next starts a fresh one.
    An idle worker exits after idle_seconds. Meant to be used from a single event loop.
    """

    script = WORKER_SCRIPT
    protocol: ClassVar[ModuleType] = wire
    label = "generation worker"
    activity = "generation"
    log = logging.getLogger(__name__)

    async def generate(
        self,
        request: GenerationRequest,
        on_progress: Callable[[Progress], None] | None = None,
        on_image: Callable[[Path], None] | None = None,
    ) -> GenerationOutcome:
        """Run one request on the warm worker; never raises for a worker failure, it returns status failed."""
        return await self._serve(
            request.job_id,
            lambda log_path: self._request_line(request, log_path),
            lambda images: self._follow(request, images, on_progress, on_image),
        )

    def _outcome(self, status: Status, items: list[Path], error: str | None) -> GenerationOutcome:
        return GenerationOutcome(status, items, error, self.loads)

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
                self._safely(on_progress, progress)
            elif kind == wire.EVENT_IMAGE:
                path = Path(event["path"])
                images.append(path)
                if on_image is not None:
                    self._safely(on_image, path)
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
