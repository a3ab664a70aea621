"""The worker's health object as `GET /health` shows it."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.schemas import Schema, examples

HEALTH_EXAMPLE: dict[str, Any] = {
    "status": "ok",
    "version": "0.1.0",
    "worker_id": "pod-1",
    "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_mb": 81559, "memory_used_mb": 1}],
    "slots": [{"gpu": "0", "job_id": None, "warm_model": None}],
    "ai_toolkit": {"found": True, "dir": "/app/ai-toolkit", "version": "0.12.26", "commit": "27a03a9"},
    "disk": {"path": "/workspace", "free_bytes": 107374182400, "total_bytes": 214748364800},
    "database": {"ok": True, "dialect": "sqlite"},
    "queue_depth": 0,
    "jobs": {"completed": 3},
}


class Gpu(Schema):
    """One GPU as nvidia-smi reports it."""

    index: int
    name: str
    memory_total_mb: int | None = None
    memory_used_mb: int | None = None


class Slot(Schema):
    """One GPU slot: the job it runs and the base model its generation worker keeps loaded."""

    gpu: str
    job_id: str | None = None
    warm_model: str | None = None


class AiToolkit(Schema):
    """Whether ai-toolkit's run.py is found, its version and git commit."""

    found: bool
    dir: str | None = None
    version: str | None = None
    commit: str | None = None
    reason: str | None = Field(default=None, description="Why it is not found.")


class Disk(Schema):
    """Free and total bytes of the workspace's filesystem."""

    path: str
    free_bytes: int
    total_bytes: int


class Database(Schema):
    """Whether the database answers, and which one it is."""

    ok: bool
    dialect: str


class Health(Schema):
    """The worker's health: `ok` when the database answers and ai-toolkit is found, else `degraded`."""

    model_config = examples(HEALTH_EXAMPLE)

    status: str = Field(description="`ok` or `degraded`.")
    version: str = Field(description="lorapod's version.")
    worker_id: str
    gpus: list[Gpu]
    slots: list[Slot]
    ai_toolkit: AiToolkit
    disk: Disk
    database: Database
    queue_depth: int = Field(description="Jobs waiting for a slot.")
    jobs: dict[str, int] = Field(description="Jobs by status.")
