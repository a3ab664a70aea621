"""GPU slots and the persistent FIFO queue: one running job per slot, started the moment a slot frees."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core.jobs.leases import lease_deadline
from core.jobs.rows import Job, JobType, utcnow
from core.jobs.store import JobStore
from gpu.captioning import WarmCaptioner
from gpu.generation import WarmGenerator
from gpu.loop import call_soon

log = logging.getLogger("lorapod.scheduler")


@dataclass
class Slot:
    """One GPU (or the CPU when there is none): at most one running job, maybe a warm generator and captioner."""

    gpu: str | None
    job_id: str | None = None
    generator: WarmGenerator | None = None
    captioner: WarmCaptioner | None = None

    @property
    def label(self) -> str:
        """The slot's name as stored on jobs."""
        return self.gpu if self.gpu is not None else "cpu"

    @property
    def warm_model(self) -> str | None:
        """The base model its warm generator holds, if any."""
        return self.generator.loaded_model if self.generator and self.generator.running else None


Runner = Callable[[Job, Slot, bool], Awaitable[None]]


class Scheduler:
    """Claims queued jobs in FIFO order onto free slots and runs them on the service's event loop."""

    def __init__(
        self, *, store: JobStore, slots: list[Slot], worker_id: str, run_job: Runner, lease_seconds: float = 30.0
    ) -> None:
        self.store = store
        self.slots = slots
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self._run_job = run_job
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = threading.Lock()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the loop jobs run on."""
        self._loop = loop

    def kick(self) -> None:
        """Start queued jobs on free slots now; callable from any thread."""
        call_soon(self._loop, self._schedule)

    @property
    def busy_slots(self) -> int:
        """How many slots run a job."""
        return sum(1 for slot in self.slots if slot.job_id)

    def _schedule(self) -> None:
        if self._loop is None:  # shut down: queued jobs wait for the next start
            return
        with self._lock:
            free = [slot for slot in self.slots if slot.job_id is None]
            if not free:
                return
            picked: dict[str, Slot] = {}

            def pick(job: Job) -> str:
                slot = self._pick_slot(job, free)
                free.remove(slot)
                picked[job.id] = slot
                return slot.label

            # The claim is exclusive across every worker sharing the database (see JobStore.claim).
            lease_until = lease_deadline(utcnow(), self.lease_seconds)
            for job in self.store.claim(worker_id=self.worker_id, limit=len(free), lease_until=lease_until, pick=pick):
                self._start(job, picked[job.id], adopted=False)

    def adopt(self, job: Job, slot: Slot) -> None:
        """Watch a trainer a previous server run started, on the slot it holds."""
        self._start(job, slot, adopted=True)

    def _start(self, job: Job, slot: Slot, *, adopted: bool) -> None:
        slot.job_id = job.id
        task = asyncio.get_running_loop().create_task(self._run(job, slot, adopted), name=f"job-{job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _pick_slot(job: Job, free: list[Slot]) -> Slot:
        # A generation goes where its base model is already loaded; a training avoids slots
        # holding a warm generator, so generators stay warm as long as another slot will do.
        if job.type == JobType.generate:
            for slot in free:
                if slot.warm_model and slot.warm_model == job.config.get("base_model"):
                    return slot
            return free[0]
        if job.type == JobType.caption:
            for slot in free:
                if slot.captioner and slot.captioner.running and slot.captioner.loaded_model == job.config.get("model"):
                    return slot
            return free[0]
        cold = [slot for slot in free if slot.warm_model is None and not (slot.captioner and slot.captioner.running)]
        return (cold or free)[0]

    async def _run(self, job: Job, slot: Slot, adopted: bool) -> None:
        try:
            await self._run_job(job, slot, adopted)
        except Exception:  # the job runner records failures; this guards the slot
            log.exception("job %s crashed the scheduler task", job.id)
        finally:
            slot.job_id = None
            self._schedule()

    async def shutdown(self) -> None:
        """Stop scheduling, stop warm generators and let job tasks go (their trainers keep running)."""
        self._loop = None
        for slot in self.slots:
            for warm in (slot.generator, slot.captioner):
                if warm is not None:
                    with contextlib.suppress(Exception):
                        await warm.shutdown()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
