"""P9: warm generation: a request on the same base model once the worker is warm, against its anchor, the first
request (worker start + model load), in the same run; goal: the warm request takes at most half the first.

Builds the tiny random SD 1.5 pipeline in a temporary workspace, runs a few requests on one WarmGenerator
and prints a table with the times, their ratio and the worker's base-model load counter. CPU is enough.
Run: python bench/bench_generation.py [--quick] [--json PATH] [--warm-runs N] [--size PX] [--steps N]
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
from core.storage.workspace import Workspace  # noqa: E402
from gpu.generation import GenerationOutcome, GenerationRequest, WarmGenerator  # noqa: E402
from tests.fakes.tiny_sd import build_tiny_lora, build_tiny_sd15  # noqa: E402


def request(workspace: Workspace, job_id: str, *, size: int, steps: int, lora: Path | None) -> GenerationRequest:
    """One image on the tiny model."""
    return GenerationRequest(
        job_id=job_id,
        base_model=str(workspace.models / "tiny-sd15"),
        pipeline="sd15",
        lora_path=lora,
        lora_scale=1.0,
        prompts=["a red cube on a table"],
        negative_prompt=None,
        width=size,
        height=size,
        steps=steps,
        guidance_scale=5.0,
        seed=1,
        num_images=1,
        output_dir=workspace.generated / job_id,
        output_format="png",
    )


async def timed(gen: WarmGenerator, req: GenerationRequest) -> tuple[float, GenerationOutcome]:
    """Seconds one request took, and its outcome (which must be completed)."""
    started = time.perf_counter()
    outcome = await gen.generate(req)
    elapsed = time.perf_counter() - started
    if outcome.status != "completed":
        raise SystemExit(f"request {req.job_id} {outcome.status}: {outcome.error}")
    return elapsed, outcome


GOAL = 0.5  # the warm worker exists so that later requests skip the start and the load


async def bench(root: Path, *, warm_runs: int, size: int, steps: int) -> list[Figure]:
    """Run the requests, print the table and give the figure."""
    workspace = Workspace(root).ensure()
    started = time.perf_counter()
    model = build_tiny_sd15(workspace.models / "tiny-sd15")
    lora = build_tiny_lora(model, workspace.output / "bench" / "bench_lora.safetensors")
    build_seconds = time.perf_counter() - started
    gen = WarmGenerator(
        python=sys.executable,
        gpu=None,
        log_path_for=lambda job_id: workspace.logs / f"{job_id}.log",
        extra_env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        idle_seconds=600.0,
    )
    try:
        first, _ = await timed(gen, request(workspace, "gen_first", size=size, steps=steps, lora=None))
        warm = [
            (await timed(gen, request(workspace, f"gen_warm{i}", size=size, steps=steps, lora=None)))[0]
            for i in range(warm_runs)
        ]
        lora_seconds, outcome = await timed(gen, request(workspace, "gen_lora", size=size, steps=steps, lora=lora))
    finally:
        await gen.shutdown()
    warm_median = statistics.median(warm)
    rows = [
        ("tiny model build (in-process)", build_seconds),
        ("first request (start + load + generate)", first),
        (f"warm request, same base (median of {warm_runs})", warm_median),
        ("warm request with a new LoRA", lora_seconds),
    ]
    print(f"\nwarm generation, {size}x{size}, {steps} steps, 1 image per request")
    print(f"{'what':<48} {'seconds':>9}")
    for label, seconds in rows:
        print(f"{label:<48} {seconds:>9.3f}")
    print(f"{'first / warm':<48} {first / warm_median:>8.1f}x")
    print(f"{'base-model loads by the worker':<48} {outcome.loads:>9d}")
    return [
        lower_is_better(
            "P9",
            f"warm generate, same base model (median of {warm_runs})",
            warm_median,
            "s",
            anchor="the first generate (start + load)",
            anchor_value=first,
            goal=GOAL,
            detail=f"tiny SD 1.5 on the CPU, {size}x{size}, {steps} steps; a new LoRA on the warm model "
            f"{lora_seconds:.2f} s; {outcome.loads} base-model load(s)",
        )
    ]


def main() -> int:
    """Parse the options and run the benchmark in a temporary workspace."""
    parser = arguments(__doc__)
    parser.add_argument("--warm-runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    if args.quick:
        args.warm_runs = 2
    with tempfile.TemporaryDirectory(prefix="lorapod-bench-gen-") as root:
        workspace = Path(root) / "workspace"
        return finish(asyncio.run(bench(workspace, warm_runs=args.warm_runs, size=args.size, steps=args.steps)))


if __name__ == "__main__":
    raise SystemExit(main())
