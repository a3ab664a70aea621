"""One ai-toolkit training as a subprocess: spawn, follow its log, stop it, and say how it ended."""

from __future__ import annotations

import asyncio
import codecs
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from gpu.artifacts import Artifact, scan_training_output
from gpu.loop import call_soon
from gpu.process import ManagedProcess, describe_signal, gpu_env
from gpu.progress import BarParser, Progress

log = logging.getLogger(__name__)

ARTIFACT_SCAN_SECONDS = 1.0
# How much of the log's end is read to explain the exit; the error line and the banners sit at the very end.
SUMMARY_BYTES = 1024 * 1024
READ_BYTES = 4 * 1024 * 1024
ERROR_PREFIX = "Error running job: "
STOP_BANNER = "Job stopped"
_LINE = re.compile(r"\r?\n")
_TAIL_LINES = 5
_MAX_LINE = 300


@dataclass(frozen=True)
class RunOutcome:
    """How a training ended."""

    status: Literal["completed", "cancelled", "failed"]
    exit_code: int | None  # Popen returncode; negative = killed by that signal
    error: str | None  # one readable message when failed


@dataclass(frozen=True)
class LogSummary:
    """What the end of the log says about the exit."""

    error: str | None  # text after the last "Error running job: "
    stopped: bool  # the "Job stopped" banner was printed
    last_lines: list[str]


def _summarize(text: str) -> LogSummary:
    """Find the error line, the stop banner and the last lines (bar redraws collapsed) in the log's end."""
    error = None
    stopped = False
    lines: list[str] = []
    for raw in _LINE.split(text):
        # A line holding \r redraws shows, on a terminal, its last non-empty state.
        pieces = [piece for piece in raw.split("\r") if piece.strip()]
        if not pieces:
            continue
        line = pieces[-1].rstrip()
        # The error line can follow an unclosed bar on the same line, so search within the line.
        position = raw.rfind(ERROR_PREFIX)
        if position >= 0:
            error = raw[position + len(ERROR_PREFIX) :].split("\r")[0].strip() or error
        if line.strip() == STOP_BANNER:
            stopped = True
        lines.append(line)
    return LogSummary(error=error, stopped=stopped, last_lines=lines[-_TAIL_LINES:])


def read_log_summary(log_path: Path, start_offset: int = 0) -> LogSummary:
    """Summarise the end of a log from start_offset on (a run's own part of a shared log file)."""
    try:
        with log_path.open("rb") as reader:
            size = reader.seek(0, os.SEEK_END)
            reader.seek(max(start_offset, size - SUMMARY_BYTES))
            text = reader.read().decode("utf-8", errors="replace")
    except OSError:
        text = ""
    return _summarize(text)


def _shorten(line: str) -> str:
    """Keep one log line readable in an error message."""
    return line if len(line) <= _MAX_LINE else line[: _MAX_LINE - 1] + "…"


class TrainingRun:
    """Run `python run.py <config>` in ai-toolkit's folder once, reporting progress and artifacts."""

    def __init__(
        self,
        *,
        python: str,
        toolkit_dir: Path,
        config_path: Path,
        job_name: str,
        save_root: Path,
        log_path: Path,
        gpu: str | None,
        extra_env: Mapping[str, str] | None = None,
        on_start: Callable[[int], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_artifacts: Callable[[list[Artifact]], None] | None = None,
        progress_interval: float = 1.0,
        poll_interval: float = 0.25,
    ) -> None:
        self.python = python
        self.toolkit_dir = Path(toolkit_dir)
        self.config_path = Path(config_path)
        self.job_name = job_name
        self.save_root = Path(save_root)
        self.log_path = Path(log_path)
        self.gpu = gpu
        self._extra_env = dict(extra_env or {})
        self._on_start = on_start
        self._on_progress = on_progress
        self._on_artifacts = on_artifacts
        self.progress_interval = progress_interval
        self.poll_interval = poll_interval
        self.pid: int | None = None
        self.stop_requested = False
        self.progress: Progress | None = None  # the newest bar state seen
        self.artifacts: list[Artifact] = []
        self._process: ManagedProcess | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_grace = 0.0
        self._parser = BarParser(job_name)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._delivered: Progress | None = None
        self._delivered_at = float("-inf")
        self._scanned_at = float("-inf")

    def request_stop(self, grace: float) -> None:
        """SIGINT the trainer now, SIGKILL its group after grace seconds; safe at any time and from any thread."""
        self.stop_requested = True
        self._stop_grace = grace
        # No loop yet: run() sees the flag before it starts anything. A closed loop: the run is over.
        call_soon(self._loop, self._stop_process, grace)

    def _stop_process(self, grace: float) -> None:
        """Stop the child if there is one (on the loop's thread)."""
        if self._process is not None:
            self._process.stop(grace)

    async def run(self) -> RunOutcome:
        """Spawn the trainer, follow its log until it exits, and map the exit to an outcome.

        If this coroutine is cancelled (a server shutting down), the trainer keeps running in its own session:
        a later server can adopt it through its pid and log.
        """
        if not (self.toolkit_dir / "run.py").is_file():
            return RunOutcome("failed", None, f"ai-toolkit's run.py was not found in {self.toolkit_dir}")
        if shutil.which(self.python) is None:
            message = f"the Python interpreter {self.python} was not found or is not executable"
            return RunOutcome("failed", None, message)
        if self.stop_requested:
            return RunOutcome("cancelled", None, None)
        self._loop = asyncio.get_running_loop()
        start_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # The trainer runs in toolkit_dir, so a relative config path is made absolute here.
        argv = [self.python, "run.py", str(self.config_path.absolute())]
        env = gpu_env(os.environ, self.gpu, self._extra_env)
        try:
            self._process = ManagedProcess.start(argv, cwd=self.toolkit_dir, env=env, log_path=self.log_path)
        except OSError as exc:
            return RunOutcome("failed", None, f"could not start ai-toolkit with {self.python}: {exc.strerror or exc}")
        process = self._process
        self.pid = process.pid
        self._call(self._on_start, process.pid)
        with self.log_path.open("rb") as reader:
            reader.seek(start_offset)
            waiter = asyncio.ensure_future(process.wait())
            try:
                while True:
                    done, _ = await asyncio.wait({waiter}, timeout=self.poll_interval)
                    self._poll(reader, final=bool(done))
                    if done:
                        break
                returncode = waiter.result()
            finally:
                # When we are cancelled: stop following; the trainer keeps running.
                if not waiter.done() and not waiter.get_loop().is_closed():
                    waiter.cancel()
        return self._outcome(returncode, read_log_summary(self.log_path, start_offset))

    def _poll(self, reader: BinaryIO, *, final: bool) -> None:
        """Read what the trainer wrote since the last poll, then report progress and artifacts as due."""
        while True:
            data = reader.read(READ_BYTES)
            if data:
                found = self._parser.feed(self._decoder.decode(data))
                if found is not None:
                    self.progress = found
            if not data or len(data) < READ_BYTES:
                break
        now = time.monotonic()
        progress = self.progress
        due = final or now - self._delivered_at >= self.progress_interval
        if progress is not None and progress != self._delivered and due:
            self._delivered, self._delivered_at = progress, now
            self._call(self._on_progress, progress)
        if final or now - self._scanned_at >= ARTIFACT_SCAN_SECONDS:
            self._scanned_at = now
            artifacts = scan_training_output(self.save_root, self.job_name)
            if final or artifacts != self.artifacts:
                self.artifacts = artifacts
                self._call(self._on_artifacts, list(artifacts))

    def _outcome(self, returncode: int, summary: LogSummary) -> RunOutcome:
        """Map the exit status and the log's end to completed, cancelled or failed."""
        if returncode == 0:
            stopped = self.stop_requested or summary.stopped
            return RunOutcome("cancelled" if stopped else "completed", 0, None)
        interrupted = any("KeyboardInterrupt" in line for line in summary.last_lines)
        if self.stop_requested and (returncode < 0 or returncode == 130 or interrupted or summary.error == STOP_BANNER):
            # Older checkouts die by the SIGINT itself; one stopped while still importing ends on a
            # KeyboardInterrupt traceback; a trainer that ignored it was killed after the grace.
            return RunOutcome("cancelled", returncode, None)
        if returncode < 0:
            return RunOutcome("failed", returncode, f"ai-toolkit was {describe_signal(returncode)}")
        if summary.error:
            return RunOutcome("failed", returncode, summary.error)
        tail = " | ".join(_shorten(line) for line in summary.last_lines)
        message = f"ai-toolkit {describe_signal(returncode)}" + (f"; last output: {tail}" if tail else "")
        return RunOutcome("failed", returncode, message)

    def _call(self, callback: Callable[..., None] | None, *args: object) -> None:
        """Run a caller's callback; its failure must not end the training."""
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            log.exception("callback %s of training %s failed", getattr(callback, "__name__", callback), self.job_name)
