"""Datasets kept in the bucket: content-addressed files plus one manifest per dataset, materialised on demand.

Layout under the prefix: `datasets/<name>/blobs/<sha256>` (each file once, named by its content) and
`datasets/<name>/manifest.json` (paths, sizes, sha256, captions, recorded skips). The manifest is written
last, in one request: an upload interrupted midway leaves blobs no manifest points at, so the dataset is
unchanged (or, when new, not listed at all). The bucket is the truth; a worker's training_data/<name>/ is a
cache that materialise() makes equal to the manifest, reusing every local file whose sha256 still matches.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from core.errors import NotFound
from core.settings import Settings
from core.storage.datasets import DatasetInfo, DatasetStore, _dataset_files, _stem, dataset_info, validate_name
from core.storage.files import hash_file, iso_utc
from core.storage.media import IMAGE_SUFFIXES
from core.storage.names import is_valid_name
from core.storage.objects import ObjectMissing, ObjectStore, StorageError
from core.storage.uploads import SKIPPED_FILE, FileResult, Readable, read_skipped
from core.storage.workspace import Workspace, atomic_write_text

# Per-file (size, mtime_ns, sha256) of the last materialise or publish: an unchanged file is not hashed again.
LOCAL_STATE = ".lorapod-objects.json"
_MAX_CAPTION_BYTES = 4096


class BucketDatasetStore(DatasetStore):
    """DatasetStore whose datasets live in the bucket; uploads go through the local folder, then up."""

    def __init__(
        self,
        workspace: Workspace,
        objects: ObjectStore,
        *,
        max_file_bytes: int,
        max_upload_bytes: int,
        max_zip_entries: int,
    ) -> None:
        super().__init__(
            workspace, max_file_bytes=max_file_bytes, max_upload_bytes=max_upload_bytes, max_zip_entries=max_zip_entries
        )
        self.objects = objects
        # One sync at a time per worker: a materialise must not remove files an upload committed but has not
        # published yet. Reentrant, because an upload materialises first.
        self._sync = threading.RLock()

    # ----- keys

    def manifest_key(self, name: str) -> str:
        """The key of a dataset's manifest."""
        return self.objects.key("datasets", name, "manifest.json")

    def blob_key(self, name: str, sha256: str) -> str:
        """The key of one file's content in a dataset."""
        return self.objects.key("datasets", name, "blobs", sha256)

    def manifest(self, name: str) -> dict[str, Any] | None:
        """A dataset's manifest, or None when the bucket has no such dataset."""
        validate_name(name)
        found = self.objects.get_json(self.manifest_key(name))
        return found if isinstance(found, dict) else None

    # ----- uploads: the local folder first equals the bucket's, receives the files, then goes up

    def _receive(self, name: str, files: Iterable[tuple[str, Readable | None]]) -> list[FileResult]:
        with self._sync:
            self.materialise(name, missing_ok=True)
            results = super()._receive(name, files)
            self.publish(name)
        return results

    def publish(self, name: str) -> dict[str, Any]:
        """Upload the local dataset's new files, then its manifest; returns the manifest."""
        with self._sync:
            return self._publish(name)

    def _publish(self, name: str) -> dict[str, Any]:
        folder = self.folder(name)
        previous = self.manifest(name) or {}
        known = {entry["sha256"] for entry in previous.get("files", [])}
        state = _read_state(folder)
        entries: list[dict[str, Any]] = []
        for path in _dataset_files(folder):
            rel = path.relative_to(folder).as_posix()
            sha256 = _cached_sha256(path, state.get(rel))
            st = path.stat()
            state[rel] = [st.st_size, st.st_mtime_ns, sha256]
            key = self.blob_key(name, sha256)
            if sha256 not in known and self.objects.head(key) is None:
                self.objects.put_file(key, path)
                known.add(sha256)
            entries.append({"path": rel, "size": st.st_size, "sha256": sha256})
        _add_captions(folder, entries)
        manifest = {
            "name": name,
            "files": entries,
            "skipped": read_skipped(folder),
            "updated": iso_utc(_newest(folder)),
        }
        self.objects.put_json(self.manifest_key(name), manifest)
        _write_state(folder, {rel: state[rel] for rel in (e["path"] for e in entries)})
        return manifest

    # ----- materialising

    def materialise(self, name: str, *, missing_ok: bool = False) -> dict[str, int]:
        """Make training_data/<name>/ equal to the bucket's manifest; counts of files downloaded and reused."""
        with self._sync:
            return self._materialise(name, missing_ok)

    def _materialise(self, name: str, missing_ok: bool) -> dict[str, int]:
        folder = self.folder(name)
        manifest = self.manifest(name)
        if manifest is None:
            if not missing_ok:
                raise NotFound(f"dataset '{name}' does not exist in the bucket", field="training_name")
            # Whatever a failed earlier upload left here is not part of any dataset.
            shutil.rmtree(folder, ignore_errors=True)
            return {"downloaded": 0, "reused": 0}
        folder.mkdir(parents=True, exist_ok=True)
        state = _read_state(folder)
        wanted = {entry["path"]: entry for entry in manifest.get("files", [])}
        counts = {"downloaded": 0, "reused": 0}
        for rel, entry in wanted.items():
            target = _local_path(folder, rel)
            if target.is_file() and _cached_sha256(target, state.get(rel)) == entry["sha256"]:
                counts["reused"] += 1
            else:
                key = self.blob_key(name, entry["sha256"])
                try:
                    self.objects.get_file(key, target, sha256=entry["sha256"])
                except ObjectMissing:
                    raise ObjectMissing(
                        f"dataset '{name}': file '{rel}' is missing from bucket "
                        f"'{self.objects.bucket}' (object '{key}')",
                        field="training_name",
                    ) from None
                counts["downloaded"] += 1
            st = target.stat()
            state[rel] = [st.st_size, st.st_mtime_ns, entry["sha256"]]
        for path in list(_dataset_files(folder)):
            if path.relative_to(folder).as_posix() not in wanted:
                path.unlink()
        atomic_write_text(folder / SKIPPED_FILE, json.dumps(manifest.get("skipped", []), ensure_ascii=False))
        _write_state(folder, {rel: state[rel] for rel in wanted})
        return counts

    # ----- reading: from manifests, without downloading a file

    def get(self, name: str) -> DatasetInfo:
        """One dataset as its manifest describes it."""
        manifest = self.manifest(name)
        if manifest is None:
            raise NotFound(f"dataset '{name}' does not exist", field="training_name")
        return _info(name, manifest)

    def delete(self, name: str) -> None:
        """Remove the manifest first (the dataset is gone at once), then its files, then the local copy."""
        if self.manifest(name) is None:
            raise NotFound(f"dataset '{name}' does not exist", field="training_name")
        self.objects.delete(self.manifest_key(name))
        self.objects.delete_prefix(self.objects.key("datasets", name, "blobs") + "/")
        shutil.rmtree(self.folder(name), ignore_errors=True)

    def delete_file(self, name: str, relpath: str) -> None:
        """Remove one file: from the local copy, then a new manifest without it."""
        with self._sync:
            self.materialise(name)
            super().delete_file(name, relpath)
            self.publish(name)

    def list(self) -> list[DatasetInfo]:
        """Every dataset with a manifest, by name."""
        root = self.objects.key("datasets") + "/"
        names = sorted(
            {
                key[len(root) :].split("/", 1)[0]
                for key in self.objects.list_keys(root)
                if key.endswith("/manifest.json") and key.count("/") == root.count("/") + 1
            }
        )
        out = []
        for name in names:
            manifest = self.manifest(name) if is_valid_name(name) else None
            if manifest is not None:
                out.append(_info(name, manifest))
        return out


def dataset_store(settings: Settings, workspace: Workspace, objects: ObjectStore | None) -> DatasetStore:
    """The datasets' one store: in the bucket (with local copies) when one is configured, else the workspace."""
    limits = {
        "max_file_bytes": settings.max_file_bytes,
        "max_upload_bytes": settings.max_upload_bytes,
        "max_zip_entries": settings.max_zip_entries,
    }
    if objects is None:
        return DatasetStore(workspace, **limits)
    return BucketDatasetStore(workspace, objects, **limits)


def _info(name: str, manifest: dict[str, Any]) -> DatasetInfo:
    """A DatasetInfo from a manifest (the same shape as for a local dataset)."""
    files = [{"path": e["path"], "size": e["size"]} for e in manifest.get("files", [])]
    skipped = [s for s in manifest.get("skipped", []) if isinstance(s, dict)]
    return dataset_info(name, files, skipped=skipped, modified=str(manifest.get("updated", "")))


def _add_captions(folder: Path, entries: list[dict[str, Any]]) -> None:
    """Each image's caption text (from its same-stem .txt) in its manifest entry."""
    captions = {_stem(e["path"]): e["path"] for e in entries if e["path"].lower().endswith(".txt")}
    for entry in entries:
        if os.path.splitext(entry["path"])[1].lower() in IMAGE_SUFFIXES and _stem(entry["path"]) in captions:
            raw = (folder / captions[_stem(entry["path"])]).read_bytes()[:_MAX_CAPTION_BYTES]
            entry["caption"] = raw.decode("utf-8", errors="replace").strip()


def _local_path(folder: Path, rel: str) -> Path:
    """Where a manifest path lands in the local folder; a path that would leave it is refused."""
    parts = PurePosixPath(rel).parts
    target = (folder / rel).resolve()
    if not rel or rel.startswith("/") or ".." in parts or "\x00" in rel or not target.is_relative_to(folder.resolve()):
        raise StorageError(f"dataset manifest names a path outside the dataset: {rel!r}")
    return target


def _cached_sha256(path: Path, cached: Any) -> str:
    """The file's sha256: the recorded one while size and mtime are unchanged, else hashed now."""
    st = path.stat()
    if isinstance(cached, list) and len(cached) == 3 and cached[:2] == [st.st_size, st.st_mtime_ns]:
        return str(cached[2])
    return hash_file(path)


def _read_state(folder: Path) -> dict[str, Any]:
    try:
        state = json.loads((folder / LOCAL_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    atomic_write_text(folder / LOCAL_STATE, json.dumps(state), durable=False)


def _newest(folder: Path) -> float:
    return max((p.stat().st_mtime for p in _dataset_files(folder)), default=folder.stat().st_mtime)
