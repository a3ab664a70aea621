"""The public, JSON-ready view of a job, the same on both adapters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.jobs.resume import resumable_step
from core.jobs.rows import Job


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC, or None."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def progress_view(job: Job) -> dict[str, Any]:
    """Step, total, percent, rate, ETA and last loss."""
    return {
        "step": job.step,
        "total_steps": job.total_steps,
        "percent": job.percent,
        "rate": job.rate,
        "eta_seconds": job.eta_seconds,
        "loss": job.loss,
        "info": job.info,  # the trainer's own status line, e.g. "Saving model"
    }


def job_view(job: Job) -> dict[str, Any]:
    """Everything a caller may see of a job (the config holds no secrets by construction)."""
    return {
        "id": job.id,
        "process_id": job.id,
        "type": job.type,
        "status": job.status,
        "name": job.name,
        "dataset": job.dataset,
        "base_model": job.base_model,
        "progress": progress_view(job),
        "error": job.error,
        "exit_code": job.exit_code,
        "gpu": job.gpu,
        "worker_id": job.worker_id,
        "outputs_on": job.worker_id,  # the pod whose disk holds the job's files (downloads go there)
        "cancel_requested": job.cancel_requested,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "updated_at": iso(job.updated_at),
        "params": job.params,
        "warnings": job.config.get("warnings", []) if isinstance(job.config, dict) else [],
        # captioning: {model, images, written, skipped, unreadable} of a caption job or a training's autocaption phase;
        # phase: "captioning" then "training" while a training with autocaption runs
        "captioning": job.config.get("captioning") if isinstance(job.config, dict) else None,
        "phase": job.config.get("phase") if isinstance(job.config, dict) else None,
        "output_dir": job.output_dir,
        "log_path": job.log_path,
        "artifacts": job.artifacts,
        "resumed_from": job.resumed_from,
        "retried_from": job.retried_from,
        # the step a resume would continue from (a failed or cancelled training with a checkpoint), else null
        "resumable_from_step": resumable_step(job),
        "webhook": webhook_view(job.webhook),
    }


def webhook_view(webhook: dict[str, Any] | None) -> dict[str, Any] | None:
    """The job's webhook: its URL, whether progress is sent, the delivery state and every attempt."""
    if not webhook:
        return None
    return {
        "url": webhook.get("url"),
        "progress": bool(webhook.get("progress")),
        "state": webhook.get("state"),
        "attempts": list(webhook.get("attempts") or []),
    }
