"""How fast a job starts when a slot is free: submission → claimed, and submission → trainer spawned.

The baseline, measured in the same run, is spawning the same trainer directly with
asyncio.create_subprocess_exec; the ratio shows what lorapod's queue and scheduler add.
Run: python bench/bench_start.py  (exit 1 if the median submission→spawn exceeds 50 ms)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.jobs.lifecycle import JobLifecycle  # noqa: E402
from core.jobs.rows import JobStatus  # noqa: E402
from core.jobs.service import JobService  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.training.params import TrainParams  # noqa: E402
from tests.fakes.trainer import make_dataset  # noqa: E402

FAKE_TOOLKIT = ROOT / "tests" / "fakes" / "ai_toolkit"
RUNS = 15
LIMIT_MS = 50.0


async def spawn_baseline(config: Path, log: Path) -> float:
    """Seconds to spawn the stand-in trainer directly (the floor any server pays)."""
    with log.open("ab") as out:
        began = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "run.py", str(config), cwd=FAKE_TOOLKIT, stdout=out, stderr=out, start_new_session=True
        )
        spawned = time.perf_counter() - began
    await proc.wait()
    return spawned


SPAWNED: dict[str, float] = {}


def record_spawn(original):  # type: ignore[no-untyped-def]
    """Wrap JobLifecycle.started to note when the trainer's pid is known (right after the spawn)."""

    def started(self: JobLifecycle, *, pid: int | None) -> None:
        SPAWNED[self.job_id] = time.perf_counter()
        original(self, pid=pid)

    return started


async def main() -> int:
    os.environ["FAKE_AITK_STEP_SECONDS"] = "0"
    JobLifecycle.started = record_spawn(JobLifecycle.started)  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            workspace=Path(tmp) / "ws",
            AI_TOOLKIT_DIR=FAKE_TOOLKIT,
            AI_TOOLKIT_PYTHON=sys.executable,
            gpus="0",
            progress_interval_seconds=0.2,
            worker_id="bench",
        )
        service = JobService(settings)
        await service.start()
        make_dataset(service.workspace.training_data / "bench", 1)
        params = TrainParams(training_name="bench", base_model="sd15", steps=1, save_every=1)
        claim_ms, spawn_ms, base_ms = [], [], []
        try:
            for _ in range(RUNS):
                began = time.perf_counter()
                job = service.submit_training(params)
                claimed = time.perf_counter() if service.get(job.id).status != JobStatus.queued else None
                while job.id not in SPAWNED:
                    await asyncio.sleep(0.001)
                spawned = SPAWNED[job.id]
                claim_ms.append(((claimed or spawned) - began) * 1000)
                spawn_ms.append((spawned - began) * 1000)
                final = await service.wait(job.id, timeout=60)
                assert final.status == JobStatus.completed, final.error
                config = service.workspace.root / final.config["config_path"]
                base_ms.append(await spawn_baseline(config, Path(tmp) / "baseline.log") * 1000)
        finally:
            await service.close()
    claim, spawn, base = (statistics.median(x) for x in (claim_ms, spawn_ms, base_ms))
    print(f"{'measure (median of ' + str(RUNS) + ')':<40}{'ms':>10}")
    print(f"{'submission -> claimed (running)':<40}{claim:>10.1f}")
    print(f"{'submission -> trainer spawned':<40}{spawn:>10.1f}")
    print(f"{'baseline: direct spawn of the trainer':<40}{base:>10.1f}")
    print(f"{'ratio spawned / baseline':<40}{spawn / base:>10.2f}")
    ok = spawn <= LIMIT_MS
    print(f"start within {LIMIT_MS:.0f} ms of submission: {'yes' if ok else 'NO'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
