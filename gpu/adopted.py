"""Watching a trainer this process did not start (it outlived a server restart): pid, log and outputs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from gpu.artifacts import Artifact, scan_training_output
from gpu.progress import BarParser, Progress
from gpu.training import RunOutcome, read_log_summary


def process_matches(pid: int, needle: str) -> bool:
    """True when pid is alive and its command line mentions needle (guards against pid reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return needle in cmdline


class AdoptedTraining:
    """Follows an already running trainer until it exits; its exit code is unknowable, the log tells."""

    def __init__(
        self,
        *,
        pid: int,
        log_path: Path,
        job_name: str,
        save_root: Path,
        on_progress: Callable[[Progress], None] | None = None,
        on_artifacts: Callable[[list[Artifact]], None] | None = None,
        progress_interval: float = 1.0,
        poll_interval: float = 0.5,
    ) -> None:
        self.pid = pid
        self.log_path = log_path
        self.job_name = job_name
        self.save_root = save_root
        self.on_progress = on_progress
        self.on_artifacts = on_artifacts
        self.progress_interval = progress_interval
        self.poll_interval = poll_interval
        self.stop_requested = False
        self._kill_at: float | None = None

    async def run(self) -> RunOutcome:
        """Poll the pid, the log and the output folder until the trainer is gone."""
        parser = BarParser(self.job_name)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        last_emit, artifacts = 0.0, None
        while process_matches(self.pid, "run.py"):
            offset, progress = self._feed(parser, offset)
            if progress and self.on_progress and time.monotonic() - last_emit >= self.progress_interval:
                self.on_progress(progress)
                last_emit = time.monotonic()
            found = scan_training_output(self.save_root, self.job_name)
            if found != artifacts and self.on_artifacts:
                self.on_artifacts(found)
            artifacts = found
            if self._kill_at is not None and time.monotonic() >= self._kill_at:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
            await asyncio.sleep(self.poll_interval)
        _, progress = self._feed(parser, offset)
        if progress and self.on_progress:
            self.on_progress(progress)
        if self.on_artifacts:
            self.on_artifacts(scan_training_output(self.save_root, self.job_name))
        return self._judge()

    def _feed(self, parser: BarParser, offset: int) -> tuple[int, Progress | None]:
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except OSError:
            return offset, None
        progress = parser.feed(data.decode("utf-8", errors="replace")) if data else None
        return offset + len(data), progress

    def _judge(self) -> RunOutcome:
        summary = read_log_summary(self.log_path)
        if summary.stopped or self.stop_requested:
            return RunOutcome("cancelled", None, None)
        if summary.error:
            return RunOutcome("failed", None, summary.error)
        if (self.save_root / f"{self.job_name}.safetensors").is_file():
            return RunOutcome("completed", None, None)
        return RunOutcome("failed", None, "the trainer exited while lorapod was restarting; its outcome is unknown")

    def request_stop(self, grace: float) -> None:
        """SIGINT to the trainer now, SIGKILL to its group after grace seconds."""
        self.stop_requested = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, signal.SIGINT)
        self._kill_at = time.monotonic() + grace
