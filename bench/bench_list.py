"""P8: listing jobs with 100 000 of them in the table: `GET /jobs?limit=50`, the first page and a deep cursor page
(50 000 jobs in), each the p50 of sequential single requests to `python -m app serve` (latency, not load), at most
20 ms each; the anchor shown beside each is the same page read with sqlite3 directly in this script.

The table is seeded with one bulk INSERT after migrating: finished trainings (rows as core/jobs/new_jobs.py builds
them, with artifacts), generations and caption jobs, completed, failed or cancelled, one a second.
Run: python bench/bench_list.py [--quick] [--json PATH]   (exit 1 when a goal is missed)
"""

from __future__ import annotations

import http.client
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from bench.http_load import PYTHON, free_port, server  # noqa: E402
from bench.report import Figure, arguments, at_most, finish  # noqa: E402
from core.db import make_engine, migrate  # noqa: E402
from core.jobs.lifecycle import artifact_record  # noqa: E402
from core.jobs.new_jobs import JobKeys, training_row  # noqa: E402
from core.jobs.rows import Job, JobStatus, JobType  # noqa: E402
from core.jobs.store import decode_cursor, encode_cursor  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.storage.workspace import Workspace  # noqa: E402
from core.training.builder import build_training_config  # noqa: E402
from core.training.params import TrainParams  # noqa: E402
from gpu.artifacts import Artifact  # noqa: E402
from tests.fakes.trainer import make_dataset  # noqa: E402

JOBS, PAGE, DEEP = 100_000, 50, 50_000
LIMIT_MS = 20.0
API_KEY = "bench-list-key"
FINISHED = (JobStatus.completed,) * 8 + (JobStatus.failed, JobStatus.cancelled)


def training_template(workspace: Workspace) -> dict[str, Any]:
    """A finished training's columns, built as a submission builds them, with a final LoRA and samples."""
    make_dataset(workspace.training_data / "portraits", 1)
    params = TrainParams(training_name="portraits", base_model="sd15", steps=1000, trigger_word="sks")
    plan = build_training_config(params, workspace=workspace, job_id="train_template")
    row = training_row("train_template", plan, params.model_dump(mode="json"), workspace, JobKeys())
    out = workspace.output / row.id / plan.name
    files = [Artifact(f"{plan.name}.safetensors", "lora", out / f"{plan.name}.safetensors", 9_437_184)]
    files += [
        Artifact(f"samples/17__{step:09d}_0.jpg", "sample", out / "samples" / f"{step}.jpg", 60_000, step)
        for step in (250, 500, 750, 1000)
    ]
    row.artifacts = [artifact_record(artifact, workspace) for artifact in files]
    row.step, row.total_steps, row.loss, row.gpu, row.worker_id = 1000, 1000, 0.0712, "0", "pod-a"
    return row.model_dump()


def other_templates() -> dict[str, dict[str, Any]]:
    """A generation's and a caption job's own columns (theirs are smaller than a training's)."""
    generate = {
        "name": "a portrait of sks person, studio light",
        "base_model": "runwayml/stable-diffusion-v1-5",
        "params": {"prompt": "a portrait of sks person, studio light", "steps": 30, "width": 512, "height": 512},
        "config": {"output_dir": "generated/x", "prompts": ["a portrait of sks person, studio light"], "seed": 7},
        "total_steps": 30,
        "step": 30,
    }
    caption = {
        "name": "caption portraits",
        "dataset": "portraits",
        "base_model": "Salesforce/blip-image-captioning-base",
        "params": {"training_name": "portraits", "overwrite": False, "max_length": 40},
        "config": {"model": "Salesforce/blip-image-captioning-base", "captioning": {"images": 24, "written": 24}},
    }
    return {JobType.generate: generate, JobType.caption: caption}


def seed(settings: Settings, jobs: int) -> None:
    """Migrate the workspace's database and fill its jobs table in one bulk INSERT."""
    workspace = Workspace(settings.workspace).ensure()
    engine = make_engine(settings.effective_database_url)
    migrate(engine)
    train, others = training_template(workspace), other_templates()
    rng = random.Random(11)
    newest = datetime.now(UTC) - timedelta(minutes=5)
    rows = []
    for index in range(jobs):
        kind = rng.choices((JobType.train, JobType.generate, JobType.caption), (6, 3, 1))[0]
        created = newest - timedelta(seconds=index)
        row = {**train} if kind == JobType.train else {**train, "config": {}, "artifacts": [], **others[kind]}
        status = rng.choice(FINISHED)
        row.update(
            id=f"{kind[:5]}_{index:012x}",
            type=kind,
            status=status,
            created_at=created,
            started_at=created + timedelta(seconds=2),
            finished_at=created + timedelta(seconds=600),
            updated_at=created + timedelta(seconds=600),
            error="the trainer exited with 1" if status == JobStatus.failed else None,
            exit_code=1 if status == JobStatus.failed else 0,
        )
        rows.append(row)
    with engine.begin() as conn:
        conn.execute(Job.__table__.insert(), rows)  # type: ignore[attr-defined]
    engine.dispose()


def p50_ms(measure: Callable[[], object], runs: int) -> float:
    """The median milliseconds of runs sequential calls, after a few unmeasured ones."""
    for _ in range(5):
        measure()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        measure()
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def deep_cursor(database: Path) -> tuple[str, str]:
    """The cursor the API gives after the DEEP-th newest job, as it forms it, and the id of the job after it."""
    with sqlite3.connect(database) as conn:
        (job_id, kind, status, name, created), (next_id, *_) = conn.execute(
            "SELECT id, type, status, name, created_at FROM jobs ORDER BY created_at DESC, id DESC LIMIT 2 OFFSET ?",
            (DEEP - 1,),
        ).fetchall()
    # SQLite keeps the timestamps without their zone (UTC); the server reads them back as UTC.
    job = Job(
        id=job_id, type=kind, status=status, name=name, created_at=datetime.fromisoformat(created).replace(tzinfo=UTC)
    )
    return encode_cursor(job), next_id


def bench(quick: bool) -> list[Figure]:
    """Seed, serve, and time both pages through the API and through sqlite3."""
    runs = 40 if quick else 200
    with tempfile.TemporaryDirectory(prefix="lorapod-bench-list-") as tmp:
        settings = Settings(workspace=Path(tmp) / "ws")
        began = time.perf_counter()
        seed(settings, JOBS)
        print(f"seeded {JOBS:,} jobs in {time.perf_counter() - began:.1f} s")
        database = settings.workspace / "lorapod.db"
        cursor, deep_first = deep_cursor(database)
        port = free_port()
        env = {"LORAPOD_WORKSPACE": str(settings.workspace), "LORAPOD_API_KEY": API_KEY}
        args = [PYTHON, "-m", "app", "serve", "--port", str(port)]
        with server(args, port=port, probe="/health", env=env):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

            def page(query: str, first_id: str | None = None) -> Callable[[], None]:
                def get() -> None:
                    conn.request("GET", f"/jobs?{query}", headers={"Authorization": f"Bearer {API_KEY}"})
                    response = conn.getresponse()
                    body = response.read()
                    if response.status != 200:
                        raise SystemExit(f"GET /jobs?{query}: {response.status} {body[:300]!r}")
                    data = json.loads(body)["data"]
                    if len(data) != PAGE or (first_id is not None and data[0]["id"] != first_id):
                        raise SystemExit(f"GET /jobs?{query}: not the expected page of {PAGE}")

                return get

            first_api = p50_ms(page(f"limit={PAGE}"), runs)
            deep_api = p50_ms(page(f"limit={PAGE}&cursor={cursor}", deep_first), runs)
            conn.close()
        first_sql, deep_sql = sqlite_pages(database, cursor, runs)
    return [
        at_most(
            "P8",
            f"GET /jobs?limit={PAGE}, first page, {JOBS:,} jobs (p50)",
            first_api,
            "ms",
            limit=LIMIT_MS,
            anchor="the page read with sqlite3",
            anchor_value=first_sql,
            detail=f"p50 of {runs} sequential requests on one keep-alive connection",
        ),
        at_most(
            "P8",
            f"GET /jobs?limit={PAGE}&cursor=… {DEEP:,} jobs deep (p50)",
            deep_api,
            "ms",
            limit=LIMIT_MS,
            anchor="the page read with sqlite3",
            anchor_value=deep_sql,
            detail=f"p50 of {runs} sequential requests; the cursor formed as the API forms it",
        ),
    ]


def sqlite_pages(database: Path, cursor: str, runs: int) -> tuple[float, float]:
    """The anchor: the same two pages' rows read with sqlite3, by the query the store runs (p50 ms each)."""
    created, last_id = decode_cursor(cursor)
    after = created.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")  # as SQLAlchemy stores it in SQLite
    order = f"ORDER BY created_at DESC, id DESC LIMIT {PAGE + 1}"
    deep_query = f"SELECT * FROM jobs WHERE created_at <= ? AND (created_at < ? OR id < ?) {order}"
    with sqlite3.connect(database) as conn:
        first = p50_ms(lambda: conn.execute(f"SELECT * FROM jobs {order}").fetchall(), runs)
        deep = p50_ms(lambda: conn.execute(deep_query, (after, after, last_id)).fetchall(), runs)
    return first, deep


if __name__ == "__main__":
    options = arguments(__doc__).parse_args()
    raise SystemExit(finish(bench(options.quick)))
