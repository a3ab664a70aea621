"""Small formatters and the tables the CLI prints for people (scripts use --json)."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def duration(seconds: float | None) -> str:
    """H:MM:SS, or '-' when unknown."""
    if seconds is None:
        return "-"
    total = round(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def number(value: float | None) -> str:
    """A loss-sized number in 4 significant digits, or '-'."""
    return "-" if value is None else f"{value:.4g}"


def size(value: int | None) -> str:
    """Bytes in a readable unit."""
    if value is None:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.0f} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GiB"


def jobs_table(jobs: list[dict[str, Any]]) -> Table:
    """Jobs, newest first: id, type, status, progress, loss, created."""
    table = Table(box=None, header_style="bold")
    for column in ("id", "type", "status", "progress", "loss", "created"):
        table.add_column(column)
    for job in jobs:
        progress = job.get("progress") or {}
        steps = f"{progress.get('step', 0)}/{progress.get('total_steps') or '?'}"
        table.add_row(
            str(job["id"]),
            str(job.get("type")),
            str(job.get("status")),
            steps,
            number(progress.get("loss")),
            str(job.get("created_at") or "")[:19],
        )
    return table


def job_table(job: dict[str, Any]) -> Table:
    """One job's fields and artifacts."""
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    progress = job.get("progress") or {}
    rows = [
        ("id", job.get("id")),
        ("type", job.get("type")),
        ("status", job.get("status")),
        ("name", job.get("name")),
        ("dataset", job.get("dataset")),
        ("base model", job.get("base_model")),
        ("step", f"{progress.get('step', 0)}/{progress.get('total_steps') or '?'} ({progress.get('percent', 0)}%)"),
        ("loss", number(progress.get("loss"))),
        ("ETA", duration(progress.get("eta_seconds"))),
        ("error", job.get("error")),
        ("created", job.get("created_at")),
        ("finished", job.get("finished_at")),
    ]
    for key, value in rows:
        if value not in (None, ""):
            table.add_row(key, str(value))
    for artifact in job.get("artifacts") or []:
        table.add_row(f"  {artifact.get('kind')}", f"{artifact.get('name')} ({size(artifact.get('size'))})")
    return table
