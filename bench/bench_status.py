"""P2: status polling, `GET /jobs/{id}` of a finished training, against a bare FastAPI + sqlite3 route.

lorapod is served as a pod is deployed (`python -m app serve`, LORAPOD_API_KEY set, the Bearer header sent) on
a workspace holding one training that really ran to the end on the stand-in trainer (its checkpoints, samples,
final LoRA, progress and config in the row). The anchor, bench/anchors/bare_sqlite_route.py, serves a copy of
the same database with the same uvicorn. wrk drives both in alternating rounds; the figures are the medians.
Run: python bench/bench_status.py [--quick] [--json PATH]   (about 40 s; exit 1 when a goal is missed)
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bench.http_load import (  # noqa: E402
    PYTHON,
    ROUNDS,
    SECONDS,
    Load,
    alternate,
    free_port,
    server,
    uvicorn_args,
    wrk,
)
from bench.report import Figure, finish, higher_is_better, lower_is_better  # noqa: E402
from core.jobs.rows import JobStatus  # noqa: E402
from core.jobs.service import JobService  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.training.params import TrainParams  # noqa: E402
from tests.fakes.trainer import FAKE_TOOLKIT_DIR, make_dataset  # noqa: E402

API_KEY = "bench-key-0123456789abcdef"
ANCHOR = "bare FastAPI + sqlite3 route"


def lorapod_env(workspace: Path) -> dict[str, str]:
    """The environment a pod is deployed with: its workspace, the stand-in trainer, one GPU slot, a key."""
    return {
        "LORAPOD_WORKSPACE": str(workspace),
        "AI_TOOLKIT_DIR": str(FAKE_TOOLKIT_DIR),
        "AI_TOOLKIT_PYTHON": PYTHON,
        "LORAPOD_GPUS": "0",
        "LORAPOD_WORKER_ID": "bench",
        "LORAPOD_API_KEY": API_KEY,
        "FAKE_AITK_STEP_SECONDS": "0",
    }


async def finished_training(workspace: Path) -> str:
    """Run one training to the end on the stand-in trainer: checkpoints, samples, the final LoRA; its id."""
    settings = Settings(
        workspace=workspace,
        AI_TOOLKIT_DIR=FAKE_TOOLKIT_DIR,
        AI_TOOLKIT_PYTHON=PYTHON,
        gpus="0",
        worker_id="bench",
        progress_interval_seconds=0.05,
    )
    service = JobService(settings)
    await service.start()
    try:
        make_dataset(service.workspace.training_data / "portraits", 4)
        params = TrainParams(
            training_name="portraits",
            trigger_word="sks",
            base_model="sd15",
            steps=200,
            rank=16,
            save_every=50,
            sample_every=50,
            sample_prompts=["a photo of [trigger] on a beach", "a portrait of [trigger], studio light"],
        )
        job = await service.wait(service.submit_training(params).id, timeout=120)
    finally:
        await service.close()
    if job.status != JobStatus.completed:
        raise SystemExit(f"the seeding training ended {job.status}: {job.error}")
    return job.id


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of an SQLite database (the backup API, WAL included)."""
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def fetch(url: str, headers: dict[str, str]) -> bytes:
    """One GET; raises on anything but 200."""
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as answer:
        return bytes(answer.read())


def settled(base_url: str, timeout: float = 120.0) -> None:
    """Wait for the start-up check of the generation environment (a subprocess importing torch, seconds of CPU
    a deployed pod spends once) to finish, so it does not run during the first round."""
    deadline = time.monotonic() + timeout
    while json.loads(fetch(f"{base_url}/health/ready", {}))["checks"].get("generation") is None:
        if time.monotonic() > deadline:
            raise SystemExit("the generation check did not finish")
        time.sleep(0.2)


def main(argv: list[str]) -> int:
    """Seed, serve both, drive both with wrk, report the ratios."""
    quick = "--quick" in argv
    rounds, seconds = (1, 2) if quick else (ROUNDS, SECONDS)
    os.environ["FAKE_AITK_STEP_SECONDS"] = "0"
    with tempfile.TemporaryDirectory(prefix="lorapod-bench-status-") as tmp:
        workspace = Path(tmp) / "workspace"
        job_id = asyncio.run(finished_training(workspace))
        anchor_db = Path(tmp) / "anchor.db"
        copy_database(workspace / "lorapod.db", anchor_db)

        auth = {"Authorization": f"Bearer {API_KEY}"}
        lorapod_port, anchor_port = free_port(), free_port()
        lorapod_url = f"http://127.0.0.1:{lorapod_port}/jobs/{job_id}"
        anchor_url = f"http://127.0.0.1:{anchor_port}/jobs/{job_id}"
        lorapod_cmd = [PYTHON, "-m", "app", "serve", "--port", str(lorapod_port)]
        anchor_cmd = uvicorn_args("bench.anchors.bare_sqlite_route:app", anchor_port)
        with (
            server(lorapod_cmd, port=lorapod_port, probe="/health/live", env=lorapod_env(workspace)),
            server(anchor_cmd, port=anchor_port, probe="/jobs/none", env={"ANCHOR_DB": str(anchor_db)}),
        ):
            settled(f"http://127.0.0.1:{lorapod_port}")
            body = json.loads(fetch(lorapod_url, auth))
            if body["status"] != JobStatus.completed or not body["artifacts"]:
                raise SystemExit(f"lorapod does not show the finished training: {body}")
            sizes = f"bodies {len(fetch(lorapod_url, auth))} B (lorapod) and {len(fetch(anchor_url, {}))} B (anchor)"
            loads = alternate(
                rounds,
                lorapod=lambda: wrk(lorapod_url, headers=auth, seconds=seconds),
                anchor=lambda: wrk(anchor_url, seconds=seconds),
            )
    return report(loads["lorapod"], loads["anchor"], sizes, rounds, seconds)


def report(ours: Load, anchor: Load, sizes: str, rounds: int, seconds: int) -> int:
    """The two P2 figures; a round with errors measured nothing, so it fails the run."""
    if ours.errors or anchor.errors:
        print(f"errors under load: lorapod {ours.errors}, anchor {anchor.errors}", file=sys.stderr)
    detail = f"medians of {rounds} alternating wrk rounds of {seconds} s; {sizes}"
    figures: list[Figure] = [
        higher_is_better(
            "P2",
            "GET /jobs/{id} of a finished training, throughput",
            ours.rps,
            "req/s",
            anchor=ANCHOR,
            anchor_value=anchor.rps,
            goal=1.0,
            detail=detail,
        ),
        lower_is_better(
            "P2",
            "GET /jobs/{id} of a finished training, p99 latency",
            ours.p99_ms,
            "ms",
            anchor=ANCHOR,
            anchor_value=anchor.p99_ms,
            goal=1.0,
            detail=f"p50 {ours.p50_ms:.1f} ms (lorapod) and {anchor.p50_ms:.1f} ms (anchor)",
        ),
    ]
    status = finish(figures)
    return 1 if ours.errors or anchor.errors else status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
