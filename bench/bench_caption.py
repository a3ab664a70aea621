"""X1 (an extra beyond P1-P9, with P9's goal): warm captioning: a caption job on the same model once the worker is
warm, against its anchor, the first caption job (worker start + model load), in the same run; goal: the warm job
takes at most half the first.

Builds the tiny random BLIP in a temporary folder, captions a small dataset several times on one WarmCaptioner
(overwrite on, so every image is captioned each time) and prints the times, their ratio and the model loads.
CPU is enough. Run: python bench/bench_caption.py [--quick] [--json PATH] [--warm-runs N] [--images N]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from bench.report import Figure, arguments, finish, lower_is_better  # noqa: E402
from gpu.captioning import CaptioningOutcome, CaptioningRequest, WarmCaptioner  # noqa: E402
from tests.fakes.tiny_caption import build_tiny_captioner, make_images  # noqa: E402


async def timed(warm: WarmCaptioner, request: CaptioningRequest) -> tuple[float, CaptioningOutcome]:
    """Seconds one request took, and its outcome (which must be completed)."""
    started = time.perf_counter()
    outcome = await warm.caption(request)
    elapsed = time.perf_counter() - started
    if outcome.status != "completed":
        raise SystemExit(f"request {request.job_id} {outcome.status}: {outcome.error}")
    return elapsed, outcome


GOAL = 0.5  # the warm worker exists so that later jobs skip the start and the load


async def bench(root: Path, *, warm_runs: int, images: int) -> list[Figure]:
    """Run the requests, print the table and give the figure."""
    model = build_tiny_captioner(root / "models" / "tiny-blip")
    folder = make_images(root / "dataset", images)
    (root / "logs").mkdir()
    warm = WarmCaptioner(
        python=sys.executable,
        gpu=None,
        log_path_for=lambda job_id: root / "logs" / f"{job_id}.log",
        extra_env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        idle_seconds=600.0,
    )

    def request(job_id: str) -> CaptioningRequest:
        return CaptioningRequest(
            job_id=job_id,
            model=str(model),
            prefix="",
            suffix="",
            trigger_word=None,
            max_length=20,
            overwrite=True,
            images=sorted(folder.glob("*.png")),
        )

    try:
        first, _ = await timed(warm, request("cap_first"))
        runs = [(await timed(warm, request(f"cap_warm{i}")))[0] for i in range(warm_runs)]
        _, outcome = await timed(warm, request("cap_last"))
    finally:
        await warm.shutdown()
    warm_median = statistics.median(runs)
    print(f"\nwarm captioning, tiny BLIP on the CPU, {images} images per job")
    print(f"{'what':<48} {'seconds':>9}")
    print(f"{'first job (start + load + caption)':<48} {first:>9.3f}")
    print(f"{f'warm job, same model (median of {warm_runs})':<48} {warm_median:>9.3f}")
    print(f"{'warm seconds per image':<48} {warm_median / images:>9.3f}")
    print(f"{'first / warm':<48} {first / warm_median:>8.1f}x")
    print(f"{'model loads by the worker':<48} {outcome.loads:>9d}")
    return [
        lower_is_better(
            "X1",
            f"warm caption job, same model (median of {warm_runs})",
            warm_median,
            "s",
            anchor="the first caption job (start + load)",
            anchor_value=first,
            goal=GOAL,
            detail=f"tiny BLIP on the CPU, {images} images a job ({warm_median / images:.3f} s an image warm); "
            f"{outcome.loads} model load(s)",
        )
    ]


def main() -> int:
    """Parse the options and run the benchmark in a temporary folder."""
    parser = arguments(__doc__)
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    if args.quick:
        args.warm_runs = 2
    with tempfile.TemporaryDirectory(prefix="lorapod-bench-caption-") as root:
        return finish(asyncio.run(bench(Path(root), warm_runs=args.warm_runs, images=args.images)))


if __name__ == "__main__":
    raise SystemExit(main())
