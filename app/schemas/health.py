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
    "generation": {
        "status": "ready",
        "ready": True,
        "python": "/app/ai-toolkit/venv/bin/python",
        "modules": ["torch", "diffusers", "transformers", "peft", "safetensors", "PIL"],
        "reason": None,
        "check_seconds": 6.2,
    },
    "disk": {"path": "/workspace", "free_bytes": 107374182400, "total_bytes": 214748364800},
    "bundles": {"path": "output/bundles", "count": 1, "bytes": 18874368, "retention_seconds": 3600.0},
    "storage": {"configured": False},
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


class Generation(Schema):
    """Whether the generation environment (AI_TOOLKIT_PYTHON) imports what the generation worker needs."""

    status: str = Field(description="`checking` at start, then `ready` or `unavailable`.")
    ready: bool | None = Field(description="None while the check runs.")
    python: str
    modules: list[str]
    reason: str | None = Field(default=None, description="Why it is unavailable (the failed import).")
    check_seconds: float | None = None


class Bundles(Schema):
    """The `bulk_download` zips kept on disk, and how long after their last use they are removed."""

    path: str
    count: int
    bytes: int
    retention_seconds: float


class Disk(Schema):
    """Free and total bytes of the workspace's filesystem."""

    path: str
    free_bytes: int
    total_bytes: int


class Storage(Schema):
    """The S3-compatible bucket, when one is configured, and whether it answers."""

    configured: bool
    ok: bool | None = None
    endpoint: str | None = None
    bucket: str | None = None
    prefix: str | None = None
    error: str | None = Field(default=None, description="Why the bucket is not usable.")


class Database(Schema):
    """Whether the database answers, and which one it is."""

    ok: bool
    dialect: str


class Health(Schema):
    """The worker's health: `ok` when the database answers, ai-toolkit is found and generation is not known broken."""

    model_config = examples(HEALTH_EXAMPLE)

    status: str = Field(description="`ok` or `degraded`.")
    version: str = Field(description="lorapod's version.")
    worker_id: str
    gpus: list[Gpu]
    slots: list[Slot]
    ai_toolkit: AiToolkit
    generation: Generation
    disk: Disk
    bundles: Bundles
    storage: Storage
    database: Database
    queue_depth: int = Field(description="Jobs waiting for a slot.")
    jobs: dict[str, int] = Field(description="Jobs by status.")


class Live(Schema):
    """The liveness probe's answer."""

    model_config = examples({"status": "alive"})

    status: str = Field(description="Always `alive`.")


class Ready(Schema):
    """The readiness probe's answer: 200 with `ready`, or 503 with `not ready` and the reason."""

    model_config = examples(
        {"status": "ready", "checks": {"service": True, "database": True, "training": True, "generation": True}}
    )

    status: str = Field(description="`ready` or `not ready`.")
    error: str | None = Field(default=None, description="Why it is not ready.")
    checks: dict[str, bool | None] = Field(description="The service, the database, and what the pod can run.")
