"""The generate_worker child process as lorapod sees it: its start, its JSON-line pipes, its end and why."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
from pathlib import Path
from typing import Any

from gpu import generate_protocol as wire

# The warm generator's logger, shared with gpu/generation.py: these lines are about its worker.
log = logging.getLogger("gpu.generation")

WORKER_SCRIPT = Path(__file__).resolve().with_name("generate_worker.py")
# How long an exited worker may take to close its pipes, or a worker that closed them to exit.
REAP_SECONDS = 5.0
# Room for a long "done" event (many image paths) on the protocol stream.
_STREAM_LIMIT = 4 * 1024 * 1024
# A traceback's last line, e.g. "ModuleNotFoundError: No module named 'diffusers'" or "torch.OutOfMemoryError: ...".
_EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception|Exit|Interrupt)\b(?::.*)?$")
_MAX_CAUSE = 300


class WorkerGone(Exception):
    """The worker process ended or stopped answering."""


class StartFailed(Exception):
    """The worker could not even be started (e.g. no such interpreter)."""


async def spawn_worker(
    python: str,
    *,
    cwd: Path,
    env: dict[str, str],
    log_path: Path,
    script: Path = WORKER_SCRIPT,
    label: str = "generation worker",
) -> asyncio.subprocess.Process:
    """Start a worker script (generate_worker by default) in its own session, its output appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        return await asyncio.create_subprocess_exec(
            python,
            str(script),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log_fd,
            cwd=str(cwd),
            env=env,
            start_new_session=True,
            limit=_STREAM_LIMIT,
        )
    except OSError as exc:
        raise StartFailed(f"could not start the {label} with {python}: {exc}") from exc
    finally:
        os.close(log_fd)  # the worker holds its own copy


async def next_event(proc: asyncio.subprocess.Process | None) -> dict[str, Any]:
    """The next event from the worker; WorkerGone at the end of its stream."""
    if proc is None or proc.stdout is None:
        raise WorkerGone
    while True:
        try:
            line = await proc.stdout.readline()
        except (ValueError, asyncio.LimitOverrunError, ConnectionError) as exc:
            raise WorkerGone from exc
        if not line:
            raise WorkerGone
        try:
            event = json.loads(line)
        except ValueError:
            log.warning("generation worker wrote a line that is not JSON: %r", line[:200])
            continue
        if isinstance(event, dict):
            return event


async def wait_ready(proc: asyncio.subprocess.Process, timeout: float) -> None:
    """Wait for the worker's ready event; WorkerGone if it says anything else, ends, or takes too long."""
    try:
        ready = await asyncio.wait_for(next_event(proc), timeout)
    except TimeoutError:
        kill_group(proc)
        raise WorkerGone from None
    if ready.get(wire.EVENT) != wire.EVENT_READY:
        raise WorkerGone


def send(proc: asyncio.subprocess.Process | None, message: dict[str, Any]) -> None:
    """Write one request line (buffered; drain waits for it to leave)."""
    if proc is None or proc.stdin is None or proc.returncode is not None or proc.stdin.is_closing():
        raise WorkerGone
    try:
        proc.stdin.write((json.dumps(message) + "\n").encode("utf-8"))
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise WorkerGone from exc


async def drain(proc: asyncio.subprocess.Process | None) -> None:
    """Wait until buffered request lines reached the worker."""
    if proc is None or proc.stdin is None:
        raise WorkerGone
    try:
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError) as exc:
        raise WorkerGone from exc


async def reap(proc: asyncio.subprocess.Process) -> int:
    """The exit status of a worker whose stream ended, killing it should it live on."""
    try:
        return await asyncio.wait_for(proc.wait(), REAP_SECONDS)
    except TimeoutError:  # it closed its protocol stream but lives on: it is of no use any more
        kill_group(proc)
        return await proc.wait()


def kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL every process in the worker's group; a no-op once it is empty."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def note(log_path: Path, text: str) -> None:
    """Append one of lorapod's own lines to a job's log."""
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(f"[lorapod] {text}\n")
    except OSError:
        log.warning("could not write to %s: %s", log_path, text)


def last_error_line(log_path: Path, *, window: int = 16 * 1024) -> str | None:
    """The last Python exception line ("SomeError: ...") near the end of a log, to say why a worker died."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - window))
            tail = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(tail.splitlines()):
        if _EXCEPTION_LINE.match(line):
            return line.strip()[:_MAX_CAUSE]
    return None
