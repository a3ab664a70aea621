"""P1, the serverless cold start: process start → the first job's result received by the platform.

lorapod's worker (`python -m app.handler`, a fresh workspace and SQLite database every round, as a worker without
a network volume starts) answers a `{"type": "health"}` job. The anchor, bench/anchors/bare_worker.py, is a bare
runpod worker whose handler echoes a trivial input. Both are driven by the stand-in RunPod platform of the tests
(tests/fakes/runpod_platform.py): a fresh platform holding one job for each start, alternating rounds after one
untimed start of each (so both read their files from a warm page cache); the figure is each side's median.
Run: python bench/bench_cold_start.py [--quick] [--json PATH]  (exit 1 when lorapod takes over 1.10x the anchor)
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import Figure, finish, lower_is_better  # noqa: E402
from tests.fakes.runpod_platform import FakeRunPodPlatform  # noqa: E402

FAKE_TOOLKIT = ROOT / "tests" / "fakes" / "ai_toolkit"
ANCHOR = ROOT / "bench" / "anchors" / "bare_worker.py"
ROUNDS, QUICK_ROUNDS = 7, 2
GOAL = 1.10
TIMEOUT_SECONDS = 120.0


def clean_environment() -> dict[str, str]:
    """This environment without any RunPod or lorapod settings of the caller's, so both sides start alike."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "LORAPOD_")) and k != "HF_TOKEN"}


def cold_start(args: list[str], job_input: Any, extra_env: dict[str, str], log: Path) -> float:
    """Seconds from starting args until a fresh stand-in platform has the result of its one queued job."""
    platform = FakeRunPodPlatform().start()
    platform.add_job("first-job", job_input)
    env = {**clean_environment(), **platform.worker_env("bench-worker"), **extra_env}
    try:
        with log.open("ab") as sink:
            began = time.monotonic()
            # A session of its own, so the worker's children (the SDK's heartbeat process, lorapod's
            # generation check) are stopped with it and cannot slow the next round.
            process = subprocess.Popen(
                args, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            result = platform.wait_until(lambda: platform.result("first-job"), TIMEOUT_SECONDS, "the first result")
        except AssertionError:
            raise SystemExit(f"no result from {args}; its output:\n{log.read_text(errors='replace')[-4000:]}") from None
        if "output" not in result.body:
            raise SystemExit(f"{args} answered with an error: {result.body}")
        return float(result.at - began)
    finally:
        stop_group(process)
        platform.stop()


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """Kill the worker's whole process group (its workspace is thrown away) and reap the worker."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def lorapod_start(tmp: Path, round_no: int) -> float:
    """One cold start of lorapod's worker on a fresh workspace."""
    workspace = tmp / f"ws-{round_no}"
    env = {
        "LORAPOD_WORKSPACE": str(workspace),
        "AI_TOOLKIT_DIR": str(FAKE_TOOLKIT),
        "AI_TOOLKIT_PYTHON": sys.executable,
        "HF_HUB_OFFLINE": "1",
    }
    return cold_start([sys.executable, "-m", "app.handler"], {"type": "health"}, env, tmp / "lorapod.log")


def anchor_start(tmp: Path, _round_no: int) -> float:
    """One cold start of the bare runpod worker."""
    return cold_start([sys.executable, str(ANCHOR)], {"prompt": "hello"}, {}, tmp / "anchor.log")


def main(argv: list[str]) -> list[Figure]:
    """Alternate cold starts of lorapod and the anchor and compare their medians."""
    rounds = QUICK_ROUNDS if "--quick" in argv else ROUNDS
    lorapod: list[float] = []
    anchor: list[float] = []
    with tempfile.TemporaryDirectory(prefix="lorapod-cold-") as name:
        tmp = Path(name)
        lorapod_start(tmp, -1)
        anchor_start(tmp, -1)
        for round_no in range(rounds):
            lorapod.append(lorapod_start(tmp, round_no))
            anchor.append(anchor_start(tmp, round_no))
    lorapod_s, anchor_s = statistics.median(lorapod), statistics.median(anchor)
    detail = (
        f"medians of {rounds} alternating rounds; lorapod {', '.join(f'{x:.2f}' for x in lorapod)} s, "
        f"anchor {', '.join(f'{x:.2f}' for x in anchor)} s"
    )
    return [
        lower_is_better(
            "P1",
            "serverless cold start: process start → first job answered (health)",
            lorapod_s,
            "s",
            anchor="bare runpod worker, trivial handler",
            anchor_value=anchor_s,
            goal=GOAL,
            detail=detail,
        )
    ]


if __name__ == "__main__":
    raise SystemExit(finish(main(sys.argv)))
