"""The loss series: bounded downsampling, the trainer's double draws and resumes, ai-toolkit's loss log, phases."""

from __future__ import annotations

import itertools
import math
import sqlite3
from pathlib import Path

from core.jobs.metrics_history import LossSeries, log_phase, phase_of, read_loss_log
from core.jobs.rows import Job


def test_series_keeps_the_first_draw_of_a_step_and_drops_nan() -> None:
    series = LossSeries()
    assert series.add(1, 0.5, 1e-4)
    assert not series.add(1, 0.7, 1e-4)  # the second draw of step 1 already shows step 2's loss
    assert not series.add(2, math.nan)
    assert not series.add(3, None)
    assert series.add(2, 0.4, None)
    assert series.points == [(1, 0.5, 1e-4), (2, 0.4, None)]
    assert series.since(1) == [(2, 0.4, None)]


def test_series_stays_bounded_and_spans_the_whole_run() -> None:
    series = LossSeries(max_points=100)
    for step in range(1, 100_001):
        series.add(step, 1.0 / step)
    assert len(series.points) <= 100
    assert series.points[0][0] == 1
    assert series.points[-1] == (100_000, 1.0 / 100_000, None)
    steps = [p[0] for p in series.points]
    assert steps == sorted(steps)
    assert series.stride >= 1000  # 100 000 steps in 100 points
    gaps = [b - a for a, b in itertools.pairwise(steps[:-1])]
    assert max(gaps) <= 2 * series.stride


def test_a_resume_from_an_earlier_step_drops_the_undone_points() -> None:
    series = LossSeries()
    for step in range(1, 11):
        series.add(step, float(step))
    series.add(6, 60.0)
    assert [p[0] for p in series.points] == [1, 2, 3, 4, 5, 6]
    assert series.points[-1][1] == 60.0


def test_read_loss_log_joins_loss_and_learning_rate(tmp_path: Path) -> None:
    path = tmp_path / "loss_log.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE metrics (step INTEGER, key TEXT, value_real REAL, value_text TEXT)")
        db.executemany(
            "INSERT INTO metrics VALUES (?, ?, ?, NULL)",
            [(1, "loss/loss", 0.5), (1, "learning_rate", 1e-4), (2, "loss/loss", 0.4), (2, "loss/normal", 9.0)],
        )
    assert read_loss_log(path) == [(1, 0.5, 1e-4), (2, 0.4, None)]
    assert read_loss_log(path, after_step=1) == [(2, 0.4, None)]
    assert read_loss_log(tmp_path / "missing.db") == []
    (tmp_path / "junk.db").write_bytes(b"not a database")
    assert read_loss_log(tmp_path / "junk.db") == []


def test_phases() -> None:
    job = Job(id="train_x", type="train", status="queued", name="x")
    assert phase_of(job) == "queued"
    job.status = "running"
    assert phase_of(job) == "starting"
    job.total_steps, job.step = 10, 3
    assert phase_of(job) == "training"
    assert phase_of(job, "sampling") == "sampling"
    job.step = 10
    assert phase_of(job) == "saving"
    job.status = "completed"
    assert phase_of(job, "sampling") == "completed"
    bar = "x:  30%|###       | 3/10 [00:01<00:02,  3.00it/s, lr: 1.0e-04 loss: 4.1e-01]"
    assert log_phase(["Generating Images", bar]) == "training"
    assert log_phase([bar, "Saving at step 5"]) == "saving"
    assert log_phase(["Generating baseline samples before training"]) == "sampling"
    assert log_phase(["unrelated"], "training") == "training"


def test_the_series_is_stored_per_job_resumed_after_a_restart_and_deleted_with_its_job(tmp_path: Path) -> None:
    from core.db import make_engine, migrate
    from core.jobs.metrics_history import MetricsRecorder, MetricsStore
    from core.jobs.store import JobStore
    from gpu.progress import Progress

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    jobs, metrics = JobStore(engine), MetricsStore(engine)
    jobs.insert(Job(id="train_aaaaaaaaaaaa", type="train", status="running", name="x"))
    recorder = MetricsRecorder(metrics, "train_aaaaaaaaaaaa")
    for step in (1, 2, 3):
        recorder.add(Progress(step=step, total=10, loss=1.0 / step, lr=1e-4))
    recorder.flush()
    # A new server adopting the trainer continues the stored series.
    adopted = MetricsRecorder(metrics, "train_aaaaaaaaaaaa")
    adopted.add(Progress(step=4, total=10, loss=0.25))
    adopted.flush(final=True)
    assert [p[0] for p in metrics.get("train_aaaaaaaaaaaa").points] == [1, 2, 3, 4]
    jobs.delete("train_aaaaaaaaaaaa")
    assert metrics.get("train_aaaaaaaaaaaa").points == []


def test_the_loss_log_replaces_the_bar_and_is_read_incrementally(tmp_path: Path) -> None:
    from core.db import make_engine, migrate
    from core.jobs.metrics_history import MetricsRecorder, MetricsStore
    from core.jobs.store import JobStore
    from gpu.progress import Progress

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    JobStore(engine).insert(Job(id="train_bbbbbbbbbbbb", type="train", status="running", name="x"))
    log = tmp_path / "loss_log.db"
    recorder = MetricsRecorder(MetricsStore(engine), "train_bbbbbbbbbbbb", log)
    recorder.add(Progress(step=5, total=10, loss=9.0))
    recorder.flush(final=True)  # no log yet: the bar's point is kept
    assert recorder.series.points == [(5, 9.0, None)]
    with sqlite3.connect(log) as db:
        db.execute("CREATE TABLE metrics (step INTEGER, key TEXT, value_real REAL, value_text TEXT)")
        db.executemany("INSERT INTO metrics VALUES (?, 'loss/loss', ?, NULL)", [(1, 0.5), (2, 0.4)])
    recorder.flush(final=True)
    assert recorder.series.points == [(1, 0.5, None), (2, 0.4, None)]
    recorder.add(Progress(step=3, total=10, loss=7.0))  # the bar is ignored once the log has rows
    with sqlite3.connect(log) as db:
        db.execute("INSERT INTO metrics VALUES (3, 'loss/loss', 0.3, NULL)")
    recorder.flush(final=True)
    assert MetricsStore(engine).get("train_bbbbbbbbbbbb").points == [(1, 0.5, None), (2, 0.4, None), (3, 0.3, None)]
