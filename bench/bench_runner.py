"""P7: does following a trainer cost it time? The stand-in ai-toolkit drawing about 10 000 progress redraws a
second under lorapod's TrainingRun (log tailing, bar parsing, progress callbacks); its anchor is the same trainer
alone with nobody reading its log, interleaved in the same run. Goal: wall time at most 1.05 x the anchor's.

Run: python bench/bench_runner.py [--quick] [--json PATH]   (about 20-40 s; exit 1 when the goal is missed)
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bench.report import Figure, arguments, finish, lower_is_better  # noqa: E402
from gpu.progress import Progress  # noqa: E402
from gpu.training import TrainingRun  # noqa: E402
from tests.fakes.trainer import FAKE_TOOLKIT_DIR, make_dataset, write_config  # noqa: E402

MAX_RATIO = 1.05


def knobs(step_seconds: float, redraws: int) -> dict[str, str]:
    """The stand-in's environment for a busy bar."""
    return {"FAKE_AITK_STEP_SECONDS": str(step_seconds), "FAKE_AITK_REDRAWS_PER_STEP": str(redraws)}


def config_for(work: Path, name: str, dataset: Path, steps: int) -> Path:
    """A config with no saves and no samples: the bar is all the trainer writes."""
    return write_config(
        work / "configs" / f"{name}.yaml",
        name=name,
        training_folder=work / "output",
        dataset=dataset,
        steps=steps,
        save_every=steps * 10,
        disable_sampling=True,
    )


def run_alone(work: Path, name: str, dataset: Path, steps: int, env: dict[str, str]) -> tuple[float, int]:
    """Wall time of the trainer with stdout and stderr to a file and nobody reading it."""
    config = config_for(work, name, dataset, steps)
    log_path = work / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    with log_path.open("ab") as log:
        started = time.perf_counter()
        code = subprocess.run(
            [sys.executable, "run.py", str(config)], cwd=FAKE_TOOLKIT_DIR, env=full_env, stdout=log, stderr=log
        ).returncode
        elapsed = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"the stand-in failed on its own (exit {code}); see {log_path}")
    return elapsed, log_path.stat().st_size


def run_followed(work: Path, name: str, dataset: Path, steps: int, env: dict[str, str]) -> tuple[float, int, int]:
    """Wall time of the same trainer under TrainingRun (log tailing, bar parsing, a progress callback)."""
    config = config_for(work, name, dataset, steps)
    updates: list[Progress] = []
    run = TrainingRun(
        python=sys.executable,
        toolkit_dir=FAKE_TOOLKIT_DIR,
        config_path=config,
        job_name=name,
        save_root=work / "output" / name,
        log_path=work / "logs" / f"{name}.log",
        gpu=None,
        extra_env=env,
        on_progress=updates.append,
        progress_interval=0.1,
    )
    started = time.perf_counter()
    outcome = asyncio.run(run.run())
    elapsed = time.perf_counter() - started
    if outcome.status != "completed":
        raise SystemExit(f"the stand-in failed under TrainingRun: {outcome}")
    if not updates or updates[-1].step != steps:
        raise SystemExit(f"TrainingRun missed the final progress: {updates[-1:] or 'none'}")
    return elapsed, run.log_path.stat().st_size, len(updates)


def main() -> int:
    """Measure, print a table, and fail when the runner costs more than 5 %."""
    parser = arguments(__doc__)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--redraws", type=int, default=50, help="extra bar redraws per step")
    parser.add_argument("--step-seconds", type=float, default=0.005)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 100, 1
    env = knobs(args.step_seconds, args.redraws)
    alone: list[float] = []
    followed: list[float] = []
    rates: list[float] = []
    print(f"{args.steps} steps x {args.redraws + 2} redraws, {args.step_seconds * 1000:.1f} ms sleep per step")
    print(f"{'run':>3}  {'alone s':>8}  {'runner s':>8}  {'log MB':>7}  {'redraws/s':>9}  {'callbacks':>9}")
    with tempfile.TemporaryDirectory(prefix="lorapod-bench-") as tmp:
        work = Path(tmp)
        dataset = make_dataset(work / "dataset", 1)
        for index in range(args.repeats):
            seconds_alone, size = run_alone(work, f"alone_{index}", dataset, args.steps, env)
            seconds_followed, _, callbacks = run_followed(work, f"runner_{index}", dataset, args.steps, env)
            alone.append(seconds_alone)
            followed.append(seconds_followed)
            rate = args.steps * (args.redraws + 2) / seconds_alone
            rates.append(rate)
            print(
                f"{index + 1:>3}  {seconds_alone:>8.3f}  {seconds_followed:>8.3f}  {size / 1e6:>7.2f}"
                f"  {rate:>9.0f}  {callbacks:>9}"
            )
    median_alone, median_followed = statistics.median(alone), statistics.median(followed)
    figures: list[Figure] = [
        lower_is_better(
            "P7",
            "runner overhead: a busy trainer's wall time under TrainingRun",
            median_followed,
            "s",
            anchor="the same trainer alone",
            anchor_value=median_alone,
            goal=MAX_RATIO,
            detail=f"{args.steps} steps, {statistics.median(rates):,.0f} redraws/s, median of {args.repeats}",
        )
    ]
    return finish(figures)


if __name__ == "__main__":
    raise SystemExit(main())
