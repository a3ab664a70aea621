"""P6: how fast jobs start and how tightly they pack: submission → trainer spawned with a free slot (p50, at most
50 ms; its anchor, shown beside it, is spawning the same stand-in trainer directly with
asyncio.create_subprocess_exec), and N short jobs on K slots finishing within 1.05 x the ideal makespan
(ceil(N/K) x one job's duration when run alone, measured in the same run; the median of three batches).

The stand-in ai-toolkit (tests/fakes/ai_toolkit) sleeps a fixed time per step, so a job mostly waits and the
makespan shows what the queue, the scheduler and the runner add between jobs, not CPU contention.
Run: python bench/bench_start.py [--quick] [--json PATH]   (exit 1 when a goal is missed)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.report import Figure, arguments, at_most, finish, lower_is_better  # noqa: E402
from core.jobs.lifecycle import JobLifecycle  # noqa: E402
from core.jobs.rows import JobStatus  # noqa: E402
from core.jobs.service import JobService  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.training.params import TrainParams  # noqa: E402
from tests.fakes.trainer import FAKE_TOOLKIT_DIR, make_dataset  # noqa: E402

LIMIT_MS = 50.0
MAKESPAN_GOAL = 1.05
# A short job: mostly sleeping, so two trainers on two cores do not slow each other down.
STEP_SECONDS, STEPS = 0.05, 20
ALONE_RUNS = 3
BATCH_RUNS = 3  # one batch alone is at the mercy of whatever else the machine does in those seconds


@contextlib.asynccontextmanager
async def running_service(root: Path, gpus: str) -> AsyncIterator[JobService]:
    """A started JobService on the stand-in ai-toolkit with one slot per GPU in gpus, and a dataset "bench"."""
    settings = Settings(
        workspace=root,
        ai_toolkit_dir=FAKE_TOOLKIT_DIR,
        ai_toolkit_python=sys.executable,
        gpus=gpus,
        progress_interval_seconds=0.2,
        worker_id="bench",
    )
    service = JobService(settings)
    await service.start()
    make_dataset(service.workspace.training_data / "bench", 1)
    try:
        yield service
    finally:
        await service.close()


async def finished(service: JobService, job_id: str) -> float:
    """When the job completed (perf_counter); it must complete."""
    final = await service.wait(job_id, timeout=120)
    if final.status != JobStatus.completed:
        raise SystemExit(f"job {job_id} {final.status}: {final.error}")
    return time.perf_counter()


async def spawn_baseline(config: Path, log: Path) -> float:
    """Seconds to spawn the stand-in trainer directly (the floor any server pays)."""
    with log.open("ab") as out:
        began = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "run.py", str(config), cwd=FAKE_TOOLKIT_DIR, stdout=out, stderr=out, start_new_session=True
        )
        spawned = time.perf_counter() - began
    await proc.wait()
    return spawned


SPAWNED: dict[str, float] = {}


def record_spawn(original: Callable[..., None]) -> Callable[..., None]:
    """Wrap JobLifecycle.started to note when the trainer's pid is known (right after the spawn)."""

    def started(self: JobLifecycle, *, pid: int | None) -> None:
        SPAWNED[self.job_id] = time.perf_counter()
        original(self, pid=pid)

    return started


async def start_latency(root: Path, runs: int) -> Figure:
    """Submission → trainer spawned on a free slot, against spawning the trainer directly."""
    os.environ["FAKE_AITK_STEP_SECONDS"] = "0"
    params = TrainParams(training_name="bench", base_model="sd15", steps=1, save_every=1)
    claim_ms, spawn_ms, base_ms = [], [], []
    async with running_service(root / "start", "0") as service:
        for _ in range(runs):
            began = time.perf_counter()
            job = service.submit_training(params)
            claimed = time.perf_counter() if service.get(job.id).status != JobStatus.queued else None
            while job.id not in SPAWNED:
                await asyncio.sleep(0.001)
            spawned = SPAWNED[job.id]
            claim_ms.append(((claimed or spawned) - began) * 1000)
            spawn_ms.append((spawned - began) * 1000)
            await finished(service, job.id)
            config = service.workspace.root / service.get(job.id).config["config_path"]
            base_ms.append(await spawn_baseline(config, root / "baseline.log") * 1000)
    return at_most(
        "P6",
        "submission → trainer spawned, free slot (p50)",
        statistics.median(spawn_ms),
        "ms",
        limit=LIMIT_MS,
        anchor="spawning the trainer directly",
        anchor_value=statistics.median(base_ms),
        detail=f"median of {runs}; submission → claimed {statistics.median(claim_ms):.1f} ms",
    )


async def makespan(root: Path, jobs: int, slots: int, steps: int) -> Figure:
    """N short jobs submitted at once on K slots, against ceil(N/K) x one such job run alone."""
    os.environ["FAKE_AITK_STEP_SECONDS"] = str(STEP_SECONDS)
    params = TrainParams(training_name="bench", base_model="sd15", steps=steps, save_every=steps)
    async with running_service(root / "makespan", ",".join(str(i) for i in range(slots))) as service:
        alone = []
        for _ in range(ALONE_RUNS + 1):  # the first run only warms the page cache for the trainer's imports
            began = time.perf_counter()
            alone.append(await finished(service, service.submit_training(params).id) - began)
        one = statistics.median(alone[1:])
        rounds = []
        for _ in range(BATCH_RUNS):
            began = time.perf_counter()
            ids = [service.submit_training(params).id for _ in range(jobs)]
            ends = await asyncio.gather(*(finished(service, job_id) for job_id in ids))
            rounds.append(max(ends) - began)
        took = statistics.median(rounds)
    ideal = math.ceil(jobs / slots) * one
    return lower_is_better(
        "P6",
        f"{jobs} short jobs on {slots} slots: makespan",
        took,
        "s",
        anchor=f"ideal: {math.ceil(jobs / slots)} x one job alone",
        anchor_value=ideal,
        goal=MAKESPAN_GOAL,
        detail=(
            f"median of {BATCH_RUNS} batches ({', '.join(f'{r:.3f}' for r in rounds)} s); one job alone {one:.3f} s "
            f"(median of {ALONE_RUNS}; {steps} steps of {STEP_SECONDS * 1000:.0f} ms)"
        ),
    )


async def bench(quick: bool) -> list[Figure]:
    """Both P6 figures, each in its own temporary workspace."""
    JobLifecycle.started = record_spawn(JobLifecycle.started)  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="lorapod-bench-start-") as tmp:
        root = Path(tmp)
        return [
            await start_latency(root, runs=5 if quick else 15),
            await makespan(root, jobs=4 if quick else 8, slots=2, steps=STEPS // 2 if quick else STEPS),
        ]


if __name__ == "__main__":
    options = arguments(__doc__).parse_args()
    raise SystemExit(finish(asyncio.run(bench(options.quick))))
