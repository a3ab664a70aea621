"""A job's artifacts as on disk now: what the runner found, plus its log and launched config."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from core.errors import OutputsElsewhere
from core.jobs.executions import scan_generated, scan_training
from core.jobs.lifecycle import artifact_record
from core.jobs.rows import Job, JobType
from core.storage.objects import ObjectStore
from core.storage.workspace import Workspace
from gpu.artifacts import Artifact


def side_artifacts(job: Job, workspace: Workspace) -> list[dict[str, Any]]:
    """The job's log and launched config, listed beside what the runner found."""
    out: list[dict[str, Any]] = []
    for name, kind, rel in (
        ("log.txt", "log", job.log_path),
        ("job_config.yaml", "config", job.config.get("config_path")),
    ):
        path = workspace.root / rel if rel else None
        if path is not None and path.is_file():
            stat = path.stat()
            artifact = Artifact(name=name, kind=kind, path=path, size=stat.st_size, modified=stat.st_mtime)
            out.append(artifact_record(artifact, workspace))
    return out


def current_artifacts(job: Job, workspace: Workspace) -> list[dict[str, Any]]:
    """A job's artifacts as on disk now (used after restarts and for finished jobs)."""
    if job.type == JobType.caption:  # a caption job writes into its dataset: only its log is its own
        found = []
    else:
        found = (
            scan_training(job, workspace)
            if job.type == JobType.train
            else scan_generated(workspace.root / str(job.output_dir))
        )
    return with_objects([artifact_record(a, workspace) for a in found] + side_artifacts(job, workspace), job.artifacts)


def with_objects(found: list[dict[str, Any]], stored: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Files on disk gain the bucket object recorded for them; objects whose file is not here are listed too.

    Without a bucket no stored record has an `object`, and this returns what is on disk unchanged.
    """
    objects = {str(r.get("name")): r for r in stored if isinstance(r.get("object"), dict)}
    out = []
    for record in found:
        kept = objects.pop(str(record.get("name")), None)
        if kept is not None and kept["object"].get("size") == record.get("size"):
            record = {**record, "object": kept["object"]}
        out.append(record)
    return out + list(objects.values())


def find_artifact(job: Job, name: str, workspace: Workspace) -> dict[str, Any] | None:
    """The job's artifact of this name as on disk now, if there is one."""
    return next((a for a in current_artifacts(job, workspace) if a.get("name") == name), None)


def require_outputs_here(job: Job, workspace: Workspace, worker_id: str) -> None:
    """OutputsElsewhere when another pod ran the job and its output folder is not on this disk.

    Pods sharing a volume see each other's folders, so only the folder's absence counts."""
    if outputs_elsewhere(job, workspace, worker_id):
        raise OutputsElsewhere(job.id, str(job.worker_id))


def outputs_elsewhere(job: Job, workspace: Workspace, worker_id: str) -> bool:
    """True when another pod ran the job and its output folder is not on this disk."""
    if not job.worker_id or job.worker_id == worker_id or not job.output_dir:
        return False
    return not (workspace.root / job.output_dir).exists()


def remove_job_files(workspace: Workspace, job_id: str, relative_paths: list[str]) -> None:
    """Delete a job's output folder and log; paths outside the workspace or not named after the job are skipped."""
    for rel in relative_paths:
        target = workspace.resolve(rel)
        if job_id not in target.name:  # only ever the job's own folder and log
            continue
        if target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        elif target.exists():
            target.unlink()


def final_lora(job: Job, workspace: Workspace, objects: ObjectStore | None) -> Path | None:
    """A training's final LoRA file, fetched from the bucket when only the bucket has it; None if it wrote none."""
    for artifact in job.artifacts:
        if artifact.get("kind") == "lora":
            path = workspace.root / str(artifact["path"])
            obj = artifact.get("object")
            if objects is not None and isinstance(obj, dict) and not path.is_file():
                objects.get_file(str(obj["key"]), path, sha256=str(obj.get("sha256") or "") or None)
            return path
    return None
