"""Resume and retry: a new attempt of a finished training, linked to the old one.

A resume continues from the old attempt's newest intact step checkpoint with the same config and total steps.
ai-toolkit resumes by itself from the newest file (by ctime) named `<name>*` in its save folder and crashes on
a truncated one, even renamed in place (docs/reference/ai-toolkit-jobcontrol.md §6). So the new attempt gets
its own folder holding only a copy of the chosen checkpoint and, when that checkpoint is the
newest save, the optimizer state: a truncated checkpoint never comes into the trainer's sight, and the old
attempt's files stay as they were. A retry starts again from step 0 in a fresh folder.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from core.errors import Conflict, InsufficientStorage, is_disk_full
from core.jobs.rows import Job, JobStatus, JobType, new_job_id
from core.storage.safetensors import is_complete
from core.storage.workspace import Workspace
from core.training.builder import job_folder

RESUMABLE = (JobStatus.failed, JobStatus.cancelled)


@dataclass(frozen=True)
class Checkpoint:
    """A step checkpoint chosen to resume from, and the newer ones skipped because they were cut short."""

    path: Path | None
    step: int | None
    skipped: list[Path]


def pick_checkpoint(save_root: Path, name: str) -> Checkpoint:
    """The newest step checkpoint that is complete; truncated newer ones are listed as skipped."""
    pattern = re.compile(rf"^{re.escape(name)}_(\d{{9,}})\.safetensors$")
    found = []
    if save_root.is_dir():
        for path in save_root.iterdir():
            if (match := pattern.match(path.name)) and path.is_file():
                found.append((int(match[1]), path))
    skipped: list[Path] = []
    for step, path in sorted(found, reverse=True):
        if is_complete(path):
            return Checkpoint(path, step, skipped)
        skipped.append(path)
    return Checkpoint(None, None, skipped)


def resumable_step(job: Job) -> int | None:
    """The step a resume would start from, judged by the job's recorded checkpoints (None: not resumable)."""
    if job.type != JobType.train or job.status not in RESUMABLE:
        return None
    steps = [int(a["step"]) for a in job.artifacts if a.get("kind") == "checkpoint" and isinstance(a.get("step"), int)]
    return max(steps) if steps else None


def next_attempt(old: Job, workspace: Workspace, *, link: Literal["resumed_from", "retried_from"]) -> Job:
    """A queued copy of a training with a new id and folder: same name, dataset, config and total steps."""
    job_id = new_job_id(JobType.train)
    folder = job_folder(workspace, job_id)
    name = old.config["name"]
    tree = copy.deepcopy(old.config["ai_toolkit"])
    tree["config"]["process"][0]["training_folder"] = str(folder)
    if isinstance(tree.get("meta"), dict):
        tree["meta"]["lorapod_job"] = job_id
    config: dict[str, Any] = {
        **{k: v for k, v in old.config.items() if k != "resume_step"},
        "save_root": workspace.relative(folder / name),
        "config_path": workspace.relative(folder / "job_config.yaml"),
        "warnings": [],
        "ai_toolkit": tree,
    }
    return Job(
        id=job_id,
        type=JobType.train,
        status=JobStatus.queued,
        name=old.name,
        dataset=old.dataset,
        base_model=old.base_model,
        params=dict(old.params),
        config=config,
        total_steps=old.total_steps,
        log_path=workspace.relative(workspace.logs / f"{job_id}.log"),
        output_dir=workspace.relative(folder),
        webhook=_fresh_webhook(old.webhook),
        resumed_from=old.id if link == "resumed_from" else None,
        retried_from=old.id if link == "retried_from" else None,
    )


def prepare_resume(old: Job, workspace: Workspace) -> Job:
    """The resumed attempt, its folder seeded with the newest intact checkpoint; Conflict when there is none."""
    if old.type != JobType.train:
        raise Conflict(f"job '{old.id}' is a {old.type} job; only trainings can be resumed", field="process_id")
    if old.status not in RESUMABLE:
        hint = "cancel it first" if not old.terminal else "it finished; nothing is left to train"
        raise Conflict(f"job '{old.id}' is {old.status}: {hint}", field="process_id")
    chosen = pick_checkpoint(workspace.root / old.config["save_root"], old.config["name"])
    if chosen.path is None or chosen.step is None:
        raise Conflict(
            f"job '{old.id}' left no intact checkpoint to resume from; retry it to start again from step 0",
            field="process_id",
        )
    new = next_attempt(old, workspace, link="resumed_from")
    save_root = workspace.root / new.config["save_root"]
    try:
        _place(chosen.path, save_root / chosen.path.name)
        optimizer = chosen.path.parent / "optimizer.pt"
        # optimizer.pt is overwritten at every save: it matches the chosen checkpoint only if that is the newest
        if not chosen.skipped and optimizer.is_file():
            _place(optimizer, save_root / "optimizer.pt")
    except OSError as exc:
        shutil.rmtree(workspace.root / str(new.output_dir), ignore_errors=True)
        if is_disk_full(exc):
            raise InsufficientStorage("the disk is full; the checkpoint could not be prepared for the resume") from exc
        raise
    warnings = [f"resumes {old.id} from its checkpoint {chosen.path.name} (step {chosen.step})"]
    warnings += [f"skipped {p.name} of {old.id}: it was cut short while being written" for p in chosen.skipped]
    new.config["warnings"] = warnings
    new.config["resume_step"] = chosen.step
    new.step = chosen.step
    return new


def prepare_retry(old: Job, workspace: Workspace) -> Job:
    """A fresh attempt of a failed training from step 0; Conflict unless it failed."""
    if old.type != JobType.train:
        raise Conflict(f"job '{old.id}' is a {old.type} job; retry trainings", field="process_id")
    if old.status != JobStatus.failed:
        raise Conflict(f"job '{old.id}' is {old.status}; only a failed training can be retried", field="process_id")
    new = next_attempt(old, workspace, link="retried_from")
    new.config["warnings"] = [f"retries {old.id} from step 0"]
    return new


def _place(source: Path, target: Path) -> None:
    """Copy a file to target through a hidden temporary name.

    Not a hard link: the trainer rewrites checkpoints and optimizer.pt in place, which would change the old
    attempt's files through a shared inode.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.part")  # a name the trainer's `<name>*` glob never matches
    try:
        shutil.copyfile(source, temp)
        os.replace(temp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temp.unlink()


def _fresh_webhook(webhook: dict[str, Any] | None) -> dict[str, Any] | None:
    """The old attempt's webhook settings, without its delivery record."""
    if not webhook:
        return None
    return {"url": webhook.get("url"), "progress": bool(webhook.get("progress")), "state": "pending", "attempts": []}
