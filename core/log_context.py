"""The job a log line is about: set once in a job's task, read by the log formatter (see app/logging_setup.py)."""

from __future__ import annotations

from contextvars import ContextVar

# asyncio copies the context into each task, so setting it in a job's runner task tags only that job's lines.
job_context: ContextVar[str | None] = ContextVar("lorapod_job_id", default=None)
