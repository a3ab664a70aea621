"""Downloads of objects in the bucket: a pre-signed URL by default, base64 chunks read by range on request.

With a bucket configured, `download`, `download_file` and `bulk_download` answer
`{delivery: "url", url, expires_at, expires_in, key, name, size, sha256}` for a file that is in the bucket,
so a 200 MB LoRA costs one call instead of dozens. `"delivery": "base64"` keeps the chunked answers; a file
that only another worker has on disk is then read from the bucket by range.
"""

from __future__ import annotations

import base64
from pathlib import Path, PurePosixPath
from typing import Any

from core.errors import InvalidInput, NotFound
from core.jobs.service import JobService
from core.storage.bucket_datasets import BucketDatasetStore
from core.storage.files import hash_file
from core.storage.objects import ObjectStore


def wants_url(service: JobService, delivery: str | None) -> bool:
    """True when the answer should be a URL: a bucket is configured and base64 was not asked for."""
    return service.objects is not None and delivery != "base64"


def url_answer(service: JobService, obj: dict[str, Any], name: str) -> dict[str, Any]:
    """A pre-signed URL of one object, checked to still exist first (a vanished object is named)."""
    objects = _require(service)
    key = str(obj["key"])
    found = objects.head(key)
    if found is None:
        raise objects.missing(key)
    signed = objects.presign(key, filename=PurePosixPath(name).name)
    return {
        "delivery": "url",
        **signed,
        "key": key,
        "name": PurePosixPath(name).name,
        "size": found.size,
        "sha256": obj.get("sha256") or found.sha256,
    }


def object_chunk(
    service: JobService, obj: dict[str, Any], rel_path: str, offset: int, length: int | None, max_length: int
) -> dict[str, Any]:
    """One base64 chunk of an object, read by range (the file is not on this worker's disk)."""
    objects = _require(service)
    size = int(obj["size"])
    if offset > size:
        raise InvalidInput("offset", f"is past the end of the file ({size} bytes)")
    want = max_length if length is None else min(length, max_length)
    data = objects.read_range(str(obj["key"]), offset, want) if want and offset < size else b""
    end = offset + len(data)
    return {
        "file_path": rel_path,
        "name": Path(rel_path).name,
        "content": base64.b64encode(data).decode("ascii"),
        "size": size,
        "offset": offset,
        "length": len(data),
        "next_offset": end if end < size else None,
        "done": end >= size,
        "sha256": obj.get("sha256") or "",
    }


def object_for_path(service: JobService, rel: str) -> dict[str, Any] | None:
    """The bucket object behind a workspace path: a job's artifact or a dataset file; None when none is."""
    parts = PurePosixPath(rel).parts
    if len(parts) >= 3 and parts[0] == "output":
        job_id = parts[2] if parts[1] == "generated" and len(parts) >= 4 else parts[1]
        try:
            job = service.get(job_id)
        except NotFound:
            return None
        for artifact in job.artifacts:
            if artifact.get("path") == rel and isinstance(artifact.get("object"), dict):
                return dict(artifact["object"])
        return None
    datasets = service.datasets
    if len(parts) >= 3 and parts[0] == "training_data" and isinstance(datasets, BucketDatasetStore):
        inner = "/".join(parts[2:])
        for entry in (datasets.manifest(parts[1]) or {}).get("files", []):
            if entry.get("path") == inner:
                blob = datasets.blob_key(parts[1], entry["sha256"])
                return {"key": blob, "size": entry["size"], "sha256": entry["sha256"]}
    return None


def fetch_artifacts(service: JobService, artifacts: list[dict[str, Any]]) -> None:
    """Bring a job's artifacts that only the bucket holds onto this worker's disk, checksums verified."""
    objects = _require(service)
    for artifact in artifacts:
        obj = artifact.get("object")
        if not isinstance(obj, dict):
            continue
        target = service.workspace.resolve(str(artifact["path"]), field="process_id")
        if target.is_file() and target.stat().st_size == obj.get("size") and hash_file(target) == obj.get("sha256"):
            continue
        objects.get_file(str(obj["key"]), target, sha256=str(obj.get("sha256") or "") or None)


def publish_bundle(service: JobService, archive: Path, files: int) -> dict[str, Any]:
    """Put a zip built here into the bucket and answer with its URL."""
    objects = _require(service)
    info = objects.put_file(objects.key("bundles", archive.name), archive, content_type="application/zip")
    return {**url_answer(service, info.to_dict(), archive.name), "files": files}


def _require(service: JobService) -> ObjectStore:
    if service.objects is None:  # callers check wants_url first; this is a programming error
        raise RuntimeError("no bucket is configured")
    return service.objects
