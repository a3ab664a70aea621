"""ai-toolkit's job-control table, driven headless: save now, sample now, stop after a save, the trainer's status.

DiffusionTrainer (ai-toolkit's UI trainer) reads one row of a SQLite `Job` table at every step end when the
config names the file (`sqlite_db_path`) and `AITK_JOB_ID` is set (see docs/reference/ai-toolkit-jobcontrol.md):
`save_now=1` saves a checkpoint and trains on, `sample_now=1` renders the sample prompts, `stop=1` ends the run;
it writes `status`, `info` ("Saving model", "Generating images - 1/2") and `step`. Each training lorapod
launches gets its own file in its job folder (hidden from listings), reset before every launch because stale
flags would stop the next run. The flag columns are INTEGER: the trainer compares `value == 1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.errors import Conflict
from core.jobs.rows import Job, JobStatus, JobType
from core.storage.workspace import Workspace
from gpu.loop import call_soon

log = logging.getLogger("lorapod.control")

CONTROL_FILE = ".aitk_job_control.db"
# Trainer types that read the table; sd_trainer is the same trainer without it, so lorapod runs it as this one.
CONTROLLED_TYPES = ("sd_trainer", "diffusion_trainer")
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS Job (id TEXT PRIMARY KEY, name TEXT, status TEXT NOT NULL DEFAULT 'stopped', "
    "info TEXT NOT NULL DEFAULT '', step INTEGER NOT NULL DEFAULT 0, speed_string TEXT NOT NULL DEFAULT '', "
    "stop INTEGER NOT NULL DEFAULT 0, return_to_queue INTEGER NOT NULL DEFAULT 0, "
    "save_now INTEGER NOT NULL DEFAULT 0, sample_now INTEGER NOT NULL DEFAULT 0)"
)
Flag = Literal["save_now", "sample_now", "stop"]


@dataclass(frozen=True)
class ControlState:
    """The row as the trainer last wrote it."""

    status: str
    info: str
    step: int
    save_now: bool
    sample_now: bool
    stop: bool


class JobControl:
    """One job's control row; every call opens its own short connection, as the trainer does."""

    def __init__(self, path: Path, job_id: str) -> None:
        self.path = path
        self.job_id = job_id

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def reset(self) -> None:
        """Create the file and table, and leave exactly one row for this job with every flag down."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(self._connect()) as db:
            db.execute(SCHEMA)
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM Job")
            db.execute(
                "INSERT INTO Job (id, name, status, info) VALUES (?, ?, 'queued', '')", (self.job_id, self.job_id)
            )
            db.execute("COMMIT")

    def request(self, flag: Flag) -> None:
        """Raise one flag; the trainer acts on it at its next step end."""
        with contextlib.closing(self._connect()) as db:
            db.execute(f"UPDATE Job SET {flag} = 1 WHERE id = ?", (self.job_id,))

    def read(self) -> ControlState | None:
        """The row now, or None when the file or row is gone (or the trainer holds a write lock too long)."""
        if not self.path.is_file():
            return None
        try:
            with contextlib.closing(self._connect()) as db:
                row = db.execute(
                    "SELECT status, info, step, save_now, sample_now, stop FROM Job WHERE id = ?", (self.job_id,)
                ).fetchone()
        except sqlite3.Error:
            return None
        if row is None:
            return None
        status, info, step, save_now, sample_now, stop = row
        return ControlState(
            str(status), str(info), int(step or 0), int(save_now) == 1, int(sample_now) == 1, int(stop) == 1
        )


def control_path(job: Job, workspace: Workspace) -> Path:
    """Where a job's control table lives: its job folder, under a hidden name."""
    return workspace.root / str(job.output_dir) / CONTROL_FILE


def is_controllable(job: Job) -> bool:
    """Whether this training's trainer type reads the control table."""
    try:
        kind = job.config["ai_toolkit"]["config"]["process"][0].get("type")
    except (KeyError, IndexError, TypeError, AttributeError):
        return False
    return kind in CONTROLLED_TYPES


def can_sample(job: Job) -> bool:
    """Whether the training has sample prompts to render on request."""
    try:
        sample = job.config["ai_toolkit"]["config"]["process"][0].get("sample") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        return False
    return bool(sample.get("prompts") or sample.get("samples"))


def controlled_config(config: dict[str, Any], db_path: Path) -> dict[str, Any]:
    """The config as launched: diffusion_trainer reading db_path; sampling on request needs a text `neg`."""
    launched = copy.deepcopy(config)
    process = launched["config"]["process"][0]
    process["type"] = "diffusion_trainer"
    process["sqlite_db_path"] = str(db_path)
    sample = process.get("sample")
    if isinstance(sample, dict) and not isinstance(sample.get("neg"), str):
        sample["neg"] = ""  # without it sample_now crashes the trainer ("text input must be of type str")
    return launched


class ControlDriver:
    """Drives one running trainer through its row: reports status/info, saves or samples now, saves then stops."""

    POLL_SECONDS = 0.25

    def __init__(
        self,
        control: JobControl,
        *,
        on_info: Callable[[str], None],
        stop: Callable[[], None],
        save_root: Path,
        job_name: str,
        save_timeout: float,
    ) -> None:
        self.control = control
        self._on_info = on_info
        self._stop = stop
        self.save_root = save_root
        self.job_name = job_name
        self.save_timeout = save_timeout
        self.stopping_after_save = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_info: str | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the trainer is followed on (save-then-stop runs there)."""
        self._loop = loop

    async def watch(self) -> None:
        """Report the trainer's status line whenever it changes, until cancelled (the trainer's end)."""
        self._loop = asyncio.get_running_loop()
        while True:
            await self.report()
            await asyncio.sleep(self.POLL_SECONDS)

    async def report(self) -> ControlState | None:
        """Read the row once (off the loop: the trainer may hold its write lock) and report a new info."""
        state = await asyncio.to_thread(self.control.read)
        if state is not None and state.info and state.info != self._last_info:
            self._last_info = state.info
            self._on_info(state.info)
        return state

    def request(self, flag: Flag) -> None:
        """Raise a flag now (blocking: call from a worker thread or briefly from the loop)."""
        self.control.request(flag)

    def save_then_stop(self) -> None:
        """Ask for a checkpoint, wait until it is written, then stop; safe from any thread."""
        if self._loop is None or self._loop.is_closed():
            self._stop()  # not followed yet (or any more): a plain stop rather than none
            return
        self.stopping_after_save = True
        call_soon(self._loop, self._begin_save_then_stop)

    def _begin_save_then_stop(self) -> None:
        if self._task is None:
            self._task = asyncio.ensure_future(self._save_then_stop())

    async def _save_then_stop(self) -> None:
        loop = asyncio.get_running_loop()
        asked_at = time.time()
        try:
            # save_now and stop together lose the save (stop wins), so the stop waits for the save to finish.
            await asyncio.to_thread(self.control.request, "save_now")
            deadline = loop.time() + self.save_timeout
            while loop.time() < deadline:
                state = await self.report()
                if state is None or state.status not in ("running", "queued"):
                    break  # the trainer ended or crashed meanwhile
                if not state.save_now and state.info != "Saving model" and self._saved_since(asked_at):
                    break
                await asyncio.sleep(0.1)
        except Exception:
            log.exception("save before stop failed; stopping without it")
        finally:
            self._stop()

    def _saved_since(self, moment: float) -> bool:
        """Whether a step checkpoint was written after moment (the file itself, not only the flag)."""
        pattern = f"{self.job_name}_*.safetensors"
        # a coarse filesystem clock can stamp a file written just after `moment` slightly before it
        return any(path.stat().st_mtime >= moment - 0.05 for path in self.save_root.glob(pattern))


def raise_flag(job: Job, workspace: Workspace, flag: Flag) -> None:
    """Raise save_now or sample_now for a running training; Conflict says why it cannot be done."""
    what = "save a checkpoint" if flag == "save_now" else "render samples"
    if job.type != JobType.train or job.status != JobStatus.running:
        raise Conflict(f"job '{job.id}' is a {job.status} {job.type} job; only a running training can {what}")
    if flag == "sample_now" and not can_sample(job):
        raise Conflict(f"job '{job.id}' has no sample prompts to render", field="sample_prompts")
    path = control_path(job, workspace)
    if not is_controllable(job) or not path.is_file():
        raise Conflict(f"job '{job.id}' runs a trainer type that takes no requests; only cancel is possible")
    # The table is a file in the shared workspace, so any worker can raise the flag.
    JobControl(path, job.id).request(flag)


def ask_save_elsewhere(job: Job, workspace: Workspace) -> None:
    """For a cancel-with-save of a training another worker runs: raise save_now in the shared table.

    The owning worker stops the job when it sees cancel_requested; a pending save_now turns that stop into
    save-then-stop there. Nothing happens for a trainer without the table.
    """
    path = control_path(job, workspace)
    if job.status == JobStatus.running and is_controllable(job) and path.is_file():
        JobControl(path, job.id).request("save_now")
