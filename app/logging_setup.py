"""Logging for both adapters, set up once: text lines by default, JSON lines with LORAPOD_LOG_FORMAT=json.

Every line goes to stderr through one root handler: lorapod's loggers, uvicorn's server and access logs, and
Python warnings. A JSON line is one object: time, level, logger, message, the job id when the line is about a
job, the request's method, path and status for access lines, and the traceback when there is one. The values
of the configured secrets (LORAPOD_API_KEY, HF_TOKEN) are masked in every line as a last line of defence.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TextIO

from core.log_context import job_context

if TYPE_CHECKING:
    from core.settings import Settings

MASK = "[redacted]"
HANDLER_NAME = "lorapod"  # the root handler lorapod installs, found by name to be replaced
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_LOGGERS_WITH_OWN_HANDLERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class _Masking(logging.Formatter):
    """A formatter that masks secret values in what it writes."""

    def __init__(self, secrets: list[str], fmt: str | None = None) -> None:
        super().__init__(fmt)
        # Longest first, so a secret containing another is masked whole; short values would mask noise.
        self._secrets = sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True)

    def mask(self, text: str) -> str:
        """The text with every secret value replaced."""
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


class TextFormatter(_Masking):
    """`time LEVEL logger: message [job id]`, for people reading a terminal or `docker logs`."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__(secrets, TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """One line (plus a traceback when there is one)."""
        text = super().format(record)
        job_id = record_job_id(record)
        if job_id and job_id not in record.getMessage():
            text += f" [job {job_id}]"
        return self.mask(text)


class JsonFormatter(_Masking):
    """One JSON object per line, for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a single-line JSON object."""
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = record_job_id(record)
        if job_id:
            out["job_id"] = job_id
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, http_version, status = record.args
            out.update(client=client, method=method, path=path, http_version=http_version, status=status)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        # json.dumps escapes newlines inside strings, so a traceback stays on its one line.
        return self.mask(json.dumps(out, default=str, ensure_ascii=False))


def record_job_id(record: logging.LogRecord) -> str | None:
    """The job a record is about: given as extra={"job_id": ...}, else the job whose task logged it."""
    given = getattr(record, "job_id", None)
    return str(given) if given else job_context.get()


def hold_root_logger() -> None:
    """Until configure_logging runs, print records bare as Python's last resort does, on a handler of lorapod's.

    A root handler keeps libraries that call logging.basicConfig when imported (runpod does) from installing
    theirs, which would print every record a second time; configure_logging replaces this one.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(HANDLER_NAME)
    logging.getLogger().addHandler(handler)


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> logging.Handler:
    """Install the one root handler in the configured format and level; calling it again replaces it."""
    secrets = [s.get_secret_value() for s in (settings.api_key, settings.hf_token) if s is not None]
    formatter = JsonFormatter(secrets) if settings.log_format == "json" else TextFormatter(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    level = settings.log_level.upper()
    root.setLevel(level)
    for name in _LOGGERS_WITH_OWN_HANDLERS:
        # uvicorn's own config would give these their own format; here they go through the root handler.
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.setLevel(level)
    # Alembic narrates every migration step at INFO on each start; its warnings still come through.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
    logging.captureWarnings(True)  # warnings.warn lines in the same format instead of bare on stderr
    # Neither format shows the caller's file and line, thread or process: not looking them up for every record
    # (the logging HOWTO's "Optimization") makes each access line cheaper.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    return handler
