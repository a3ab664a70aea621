"""A training's loss history: a bounded, downsampled series per job, from the bar or ai-toolkit's loss log.

One row per job in `job_metrics` holds the whole series as JSON (`[[step, loss, lr], ...]`), never one row per
step: a series keeps at most MAX_POINTS points, and when it would grow past that every other point is dropped
and the spacing between kept steps doubles, so a 100 000-step run costs the same few kilobytes as a 1 000-step
one while its shape stays visible.
"""

from __future__ import annotations

import logging
import math
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, String
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel

from core.db import session_scope
from core.jobs.rows import Job, JobStatus, utcnow
from gpu.progress import Progress

log = logging.getLogger("lorapod.jobs")

MAX_POINTS = 1000
# ai-toolkit's loss log is read at most this often while the trainer writes it.
LOSS_LOG_READ_SECONDS = 2.0
LOSS_LOG_NAME = "loss_log.db"
Point = tuple[int, float, float | None]


class JobMetrics(SQLModel, table=True):
    """One job's loss series (deleted with its job)."""

    __tablename__ = "job_metrics"

    job_id: str = Field(sa_column=Column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True))
    stride: int = 1
    points: list[list[Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(default_factory=utcnow)


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: such a value is stored as null."""
    return value if value is not None and math.isfinite(value) else None


@dataclass
class LossSeries:
    """Points in step order, at most MAX_POINTS, at least `stride` steps apart (the newest one excepted)."""

    points: list[Point] = field(default_factory=list)
    stride: int = 1
    max_points: int = MAX_POINTS

    def add(self, step: int, loss: float | None, lr: float | None = None) -> bool:
        """Take one step's loss; False when nothing changed (no loss, or a step already held)."""
        loss = _finite(loss)
        if loss is None or step < 0:
            return False
        if self.points and step <= self.points[-1][0]:
            if step == self.points[-1][0]:
                return False  # ai-toolkit draws each step twice; the first draw has the step's own loss
            # The trainer resumed from an earlier checkpoint: later points describe a run that was undone.
            self.points = [p for p in self.points if p[0] < step]
        point = (step, loss, _finite(lr))
        if len(self.points) >= 2 and step - self.points[-2][0] < self.stride:
            self.points[-1] = point  # the newest point moves forward until it is a stride past the one before
        else:
            self.points.append(point)
        if len(self.points) > self.max_points:
            newest = self.points[-1]
            self.points = [*self.points[:-1:2], newest]
            self.stride *= 2
        return True

    def since(self, step: int) -> list[Point]:
        """Points after `step` (all of them for -1)."""
        return [p for p in self.points if p[0] > step]

    def to_json(self) -> list[list[Any]]:
        """The stored, JSON-ready points."""
        return [list(p) for p in self.points]

    @classmethod
    def from_row(cls, row: JobMetrics | None) -> LossSeries:
        """The series a stored row holds (an empty one for None)."""
        if row is None:
            return cls()
        points = [(int(p[0]), float(p[1]), None if p[2] is None else float(p[2])) for p in row.points]
        return cls(points=points, stride=row.stride)


class MetricsStore:
    """Reads and writes of the job_metrics table."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def get(self, job_id: str) -> LossSeries:
        """A job's series; empty when none was recorded."""
        with Session(self.engine) as session:
            return LossSeries.from_row(session.get(JobMetrics, job_id))

    def save(self, job_id: str, series: LossSeries) -> None:
        """Replace a job's series."""
        with session_scope(self.engine) as session:
            row = session.get(JobMetrics, job_id)
            if row is None:
                row = JobMetrics(job_id=job_id)
            row.points, row.stride, row.updated_at = series.to_json(), series.stride, utcnow()
            session.add(row)


def read_loss_log(path: Path, after_step: int = -1) -> list[Point]:
    """(step, loss, lr) rows of ai-toolkit's `loss_log.db` after a step; empty when it is missing or busy."""
    if not path.is_file():
        return []
    query = (
        "SELECT m.step, m.value_real, lr.value_real FROM metrics m "
        "LEFT JOIN metrics lr ON lr.step = m.step AND lr.key = 'learning_rate' "
        "WHERE m.key = 'loss/loss' AND m.step > ? ORDER BY m.step"
    )
    try:
        # Read-only, so lorapod never holds a write lock on the trainer's own database.
        with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5) as connection:
            rows = connection.execute(query, (after_step,)).fetchall()
    except sqlite3.Error as exc:
        log.debug("loss log %s not readable yet: %s", path, exc)
        return []
    return [(int(step), float(loss), None if lr is None else float(lr)) for step, loss, lr in rows if loss is not None]


def uses_loss_log(job: Job) -> bool:
    """True when the job's ai-toolkit config writes `loss_log.db` (logging.use_ui_logger)."""
    try:
        process = job.config["ai_toolkit"]["config"]["process"][0]
        return bool((process.get("logging") or {}).get("use_ui_logger"))
    except (KeyError, IndexError, TypeError, AttributeError):
        return False


class MetricsRecorder:
    """Collects one running job's loss points and writes the series when the lifecycle writes progress."""

    def __init__(self, store: MetricsStore, job_id: str, loss_log: Path | None = None) -> None:
        self.store = store
        self.job_id = job_id
        self.loss_log = loss_log
        # An adopted trainer (after a restart) continues the series the previous server stored.
        self.series = store.get(job_id)
        self._changed = False
        self._log_step = -1
        self._log_read_at = float("-inf")

    def add(self, progress: Progress) -> None:
        """Take a bar state's loss (ignored once the trainer's own loss log has rows)."""
        if self._log_step < 0 and self.series.add(progress.step, progress.loss, progress.lr):
            self._changed = True

    def flush(self, *, final: bool = False) -> None:
        """Store the series if it changed; the loss log, when the config writes one, is read first."""
        if self.loss_log is not None and (final or time.monotonic() - self._log_read_at >= LOSS_LOG_READ_SECONDS):
            self._log_read_at = time.monotonic()
            rows = read_loss_log(self.loss_log, self._log_step)
            if rows and self._log_step < 0:
                self.series = LossSeries()  # the log is exact per step: it replaces what the bar gave
            for step, loss, lr in rows:
                self.series.add(step, loss, lr)
                self._log_step = step
            self._changed = self._changed or bool(rows)
        if self._changed:
            self._changed = False
            self.store.save(self.job_id, self.series)


def phase_of(job: Job, log_phase: str | None = None) -> str:
    """What the trainer is doing in a word: queued, starting, training, sampling, saving, or the final status."""
    if job.status != JobStatus.running:
        return str(job.status)
    if log_phase in ("sampling", "saving"):
        return log_phase
    if not job.total_steps:
        return "starting"  # loading the model and caching the dataset: no bar yet
    return "training" if job.step < job.total_steps else "saving"


# Markers of ai-toolkit's phases in its log (sd_trainer's own prints).
_PHASE_MARKERS = (
    ("Generating Images", "sampling"),
    ("Generating baseline samples", "sampling"),
    ("Saving at step", "saving"),
    ("Saving model", "saving"),
)


def log_phase(lines: list[str], current: str | None = None) -> str | None:
    """The phase the newest of these log lines reveals (a bar redraw means training again)."""
    for line in reversed(lines):
        for marker, phase in _PHASE_MARKERS:
            if marker in line:
                return phase
        if "%|" in line and ("it/s" in line or "s/it" in line):
            return "training"
    return current


def metrics_view(job: Job, series: LossSeries, *, since_step: int = -1, phase: str | None = None) -> dict[str, Any]:
    """The JSON of GET /jobs/{id}/metrics and of the contract's process_status with metrics."""
    return {
        "process_id": job.id,
        "phase": phase_of(job, phase),
        "stride": series.stride,
        "points": [{"step": s, "loss": loss, "lr": lr} for s, loss, lr in series.since(since_step)],
    }
