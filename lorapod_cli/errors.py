"""The CLI's one error type and its exit codes."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What a `lorapod` exit status means (scripts can branch on it)."""

    ok = 0
    job_failed = 1  # the job failed or was cancelled
    usage = 2  # bad flags, bad input, or the server refused the request (4xx)
    unreachable = 3  # no answer, or the server failed (5xx)
    not_found = 4  # no such job, dataset or artifact
    checksum = 5  # a download did not match the server's sha256
    interrupted = 130  # Ctrl-C: only the watching stopped


class CliError(Exception):
    """A failure to report in one line and exit with `code`."""

    def __init__(self, message: str, code: ExitCode = ExitCode.usage) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
