"""The process table: one row per job, owned by Alembic migrations."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel


class JobStatus(StrEnum):
    """Where a job is in its life; the last three are terminal."""

    queued = "queued"  # waiting for a GPU slot
    running = "running"  # its process is alive on a slot
    completed = "completed"  # ended normally, artifacts final
    failed = "failed"  # ended with an error (message in `error`)
    cancelled = "cancelled"  # stopped on request; artifacts written before stay


TERMINAL_STATUSES = frozenset({JobStatus.completed, JobStatus.failed, JobStatus.cancelled})


class JobType(StrEnum):
    """What a job runs."""

    train = "train"  # ai-toolkit's run.py on a config lorapod wrote or validated
    generate = "generate"  # lorapod's generation worker
    caption = "caption"  # lorapod's caption worker on a dataset (a string column: no migration)


ID_PREFIXES = {JobType.train: "train", JobType.generate: "gen", JobType.caption: "cap"}


def new_job_id(job_type: JobType) -> str:
    """A fresh id in the seed's shape, e.g. train_ab12cd34ef56."""
    return f"{ID_PREFIXES[job_type]}_{secrets.token_hex(6)}"


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Job(SQLModel, table=True):
    """One training or generation job and everything known about it."""

    __tablename__ = "jobs"

    id: str = Field(primary_key=True, max_length=40)
    type: str = Field(index=True, max_length=16)
    status: str = Field(index=True, max_length=16)
    name: str = Field(max_length=128)
    dataset: str | None = Field(default=None, max_length=128)
    base_model: str | None = Field(default=None, max_length=512)
    params: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, index=True)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utcnow)
    step: int = 0
    total_steps: int | None = None
    loss: float | None = None
    rate: float | None = None
    eta_seconds: float | None = None
    error: str | None = None
    exit_code: int | None = None
    gpu: str | None = Field(default=None, max_length=32)
    pid: int | None = None
    worker_id: str | None = Field(default=None, max_length=128)
    log_path: str | None = Field(default=None, max_length=1024)
    output_dir: str | None = Field(default=None, max_length=1024)
    artifacts: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    cancel_requested: bool = False
    # Renewed by the pod running the job; once past, any pod may fail (or requeue) it as "worker lost".
    lease_expires_at: datetime | None = None
    idempotency_key: str | None = Field(default=None, max_length=256, unique=True)
    # sha256 of the request an idempotency key was first used with: a reuse with another body is refused
    request_hash: str | None = Field(default=None, max_length=64)
    resumed_from: str | None = Field(default=None, max_length=40)  # the attempt this one continues
    retried_from: str | None = Field(default=None, max_length=40)  # the failed job this one restarts
    info: str | None = Field(default=None, max_length=512)  # the trainer's own status line ("Saving model")
    # {"url", "progress", "state", "attempts": [{event, attempt, at, status_code, error}]}; no secret inside
    webhook: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))

    @property
    def terminal(self) -> bool:
        """True once the job can no longer change status."""
        return self.status in TERMINAL_STATUSES

    @property
    def percent(self) -> float:
        """Share of steps done, 0-100."""
        return round(100.0 * self.step / self.total_steps, 2) if self.total_steps else 0.0
