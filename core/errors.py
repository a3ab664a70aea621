"""Errors the core raises; each adapter maps them to its own wire format."""

from __future__ import annotations

import errno


class LorapodError(Exception):
    """Base of every error the core reports to a caller."""

    status_code = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def to_dict(self) -> dict[str, str]:
        """The error as a JSON-ready dict: one sentence, plus the field when there is one."""
        out = {"error": self.message}
        if self.field:
            out["field"] = self.field
        return out


class InvalidInput(LorapodError):
    """A caller's input is wrong: the field and the reason are in the message."""

    status_code = 422

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", field=field)
        self.reason = reason


class PathEscape(InvalidInput):
    """A caller-given path that would end outside the workspace."""


class NotFound(LorapodError):
    """An id, file or dataset that does not exist."""

    status_code = 404


class Conflict(LorapodError):
    """The request clashes with the current state (e.g. cancelling a finished job)."""

    status_code = 409


class OutputsElsewhere(Conflict):
    """A job's files are on the disk of the pod that ran it, not on this one (pods share only the database)."""

    def __init__(self, job_id: str, pod: str) -> None:
        super().__init__(
            f"job '{job_id}' ran on pod '{pod}' and its outputs are on that pod's disk; download them from "
            f"pod '{pod}' (pods share the database, not their files)",
            field="process_id",
        )
        self.pod = pod


class TooLarge(LorapodError):
    """A body, file or archive over the configured limits."""

    status_code = 413


class Unavailable(LorapodError):
    """The server cannot do this now (e.g. ai-toolkit is not installed or configured)."""

    status_code = 503


class InsufficientStorage(LorapodError):
    """The disk is full: nothing half-written was kept."""

    status_code = 507


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error is the filesystem running out of space (or quota), SQLite's own report included."""
    if isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS:
        return True
    # sqlite3 (and SQLAlchemy wrapping it) report a full disk as an OperationalError with this text
    return "database or disk is full" in str(exc)
