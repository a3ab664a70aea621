"""The contract's downloads: files, artifacts and zip bundles in chunks that fit the /run payload after base64."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.contract.inputs import BulkDownloadInput, DownloadFileInput, DownloadInput
from core.contract.object_downloads import (
    fetch_artifacts,
    object_chunk,
    object_for_path,
    publish_bundle,
    url_answer,
    wants_url,
)
from core.errors import NotFound
from core.jobs.rows import Job, JobType
from core.jobs.service import JobService
from core.storage.files import Chunk, build_zip, bundle_key, max_raw_chunk, read_chunk, resolve_many
from core.storage.workspace import Workspace


def download_file(service: JobService, data: DownloadFileInput) -> dict[str, Any]:
    """One chunk of a workspace file."""
    workspace = service.workspace
    target = workspace.resolve(data.file_path, field="file_path")
    refuse_private(workspace, target, "file_path")
    if service.objects is not None and (obj := object_for_path(service, workspace.relative(target))) is not None:
        if wants_url(service, data.delivery):
            return {**url_answer(service, obj, target.name), "file_path": workspace.relative(target)}
        if not target.is_file():
            return object_chunk(
                service, obj, workspace.relative(target), data.offset, data.length, chunk_limit(service)
            )
    return chunk(service, data.file_path, data.offset, data.length)


def download(service: JobService, data: DownloadInput) -> dict[str, Any]:
    """One chunk of a process's artifact (its main one when none is named)."""
    job = service.get(data.process_id)
    if data.artifact is None:
        artifact = main_artifact(job, service.current_artifacts(job))
    else:
        named = service.find_artifact(job, data.artifact)
        if named is None:
            raise NotFound(f"process '{job.id}' has no artifact named '{data.artifact}'", field="artifact")
        artifact = named
    obj = artifact.get("object")
    if isinstance(obj, dict) and service.objects is not None:
        if wants_url(service, data.delivery):
            out = {**url_answer(service, obj, str(artifact["name"])), "file_path": artifact["path"]}
            return {**out, "process_id": job.id, "artifact": artifact["name"], "kind": artifact["kind"]}
        if not service.workspace.resolve(str(artifact["path"]), field="artifact").is_file():
            out = object_chunk(service, obj, str(artifact["path"]), data.offset, data.length, chunk_limit(service))
            return {**out, "process_id": job.id, "artifact": artifact["name"], "kind": artifact["kind"]}
    out = chunk(service, str(artifact["path"]), data.offset, data.length)
    return {**out, "process_id": job.id, "artifact": artifact["name"], "kind": artifact["kind"]}


def bulk_download(service: JobService, data: BulkDownloadInput) -> dict[str, Any]:
    """One chunk of a zip of a process's files, or of chosen workspace files, built once on disk."""
    workspace = service.workspace
    source = data.source()
    if source == "process_id":
        job = service.get(str(data.process_id))
        if service.objects is not None:  # what only the bucket holds comes onto this disk first
            fetch_artifacts(service, service.current_artifacts(job))
        paths = [workspace.resolve(str(a["path"]), field="process_id") for a in service.current_artifacts(job)]
        paths = [path for path in paths if path.is_file()]
        if not paths:
            raise NotFound(f"process '{job.id}' has no files to download yet (status {job.status})", field="process_id")
        prefix = job.id
    else:
        for index, raw in enumerate(data.file_paths or []):
            field = f"file_paths[{index}]"
            refuse_private(workspace, workspace.resolve(raw, field=field), field)
        if data.directory is not None:
            refuse_private(workspace, workspace.resolve(data.directory, field="directory"), "directory")
        paths = resolve_many(workspace, data.file_paths, data.directory)
        prefix = "bundle"
    name = f"{prefix}-{bundle_key(paths)}"
    # Marked as read while built and read, so retention never removes it in between.
    with service.bundles.reading(workspace.output / "bundles" / f"{name}.zip"):
        archive = build_zip(workspace, paths, bundle_name=name)
        if wants_url(service, data.delivery):
            return publish_bundle(service, archive, len(paths))
        out = chunk(service, workspace.relative(archive), data.offset, data.length)
    return {**out, "files": len(paths)}


def chunk_limit(service: JobService) -> int:
    """The largest raw chunk a download answers with: what fits the /run payload limit after base64."""
    return max_raw_chunk(service.settings.payload_limit_run_bytes)


def chunk(service: JobService, path: str, offset: int, length: int | None) -> dict[str, Any]:
    """One chunk of a workspace file in the contract's shape."""
    with service.bundles.reading(service.workspace.root / path):  # a bundle read through download_file counts too
        piece = read_chunk(service.workspace, path, offset=offset, length=length, max_length=chunk_limit(service))
    return chunk_output(piece)


def chunk_output(chunk: Chunk) -> dict[str, Any]:
    """A chunk in the contract's shape."""
    return {
        "file_path": chunk.path,
        "name": Path(chunk.path).name,
        "content": chunk.content_b64,
        "size": chunk.size,
        "offset": chunk.offset,
        "length": chunk.length,
        "next_offset": chunk.next_offset,
        "done": chunk.done,
        "sha256": chunk.sha256,
    }


def refuse_private(workspace: Workspace, target: Path, field: str) -> None:
    """NotFound for what listings hide: hidden names anywhere in the path, and the database at the root."""
    if target != workspace.root and workspace.is_private(target):
        raise NotFound(f"{field}: no such file in the workspace", field=field)


def main_artifact(job: Job, artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """The main artifact: the final LoRA (else the newest checkpoint), or the first image."""
    if job.type == JobType.train:
        loras = [a for a in artifacts if a.get("kind") == "lora"]
        checkpoints = sorted((a for a in artifacts if a.get("kind") == "checkpoint"), key=lambda a: a.get("step") or 0)
        main = loras or checkpoints[-1:]
    else:
        main = [a for a in artifacts if a.get("kind") == "image"]
    if not main:
        raise NotFound(f"process '{job.id}' has no artifact to download yet (status {job.status})", field="process_id")
    return main[0]
