"""Training datasets: validated uploads (single files, base64, zips), listing and deletion.

A dataset is the folder training_data/<name>/ that ai-toolkit trains on: PNG, JPEG and WebP images, each
optionally with a same-stem .txt caption in the same folder, subfolders allowed, hidden names ignored.

An upload request is staged in a hidden folder inside the dataset and moved into place only when the whole
request has been read: a request over max_upload_bytes (TooLarge) or one that fails midway leaves nothing
behind. A file that cannot be used (wrong content, over max_file_bytes, a refused zip) is skipped with a
reason and does not fail the request; the reasons are kept in .lorapod-skipped.json in the dataset.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from core.errors import InsufficientStorage, InvalidInput, NotFound, PathEscape, is_disk_full
from core.storage.files import iso_utc
from core.storage.media import IMAGE_SUFFIXES
from core.storage.names import check_name, is_valid_name
from core.storage.uploads import FileResult, Readable, UploadPipeline, decode_base64_files, read_skipped
from core.storage.workspace import Workspace

# ai-toolkit's own caches inside a dataset: not the user's data, so neither listed nor counted.
_CACHE_DIRS = frozenset({"_latent_cache", "_t_e_cache", "_clip_vision_cache", "_controls"})


def validate_name(name: object) -> str:
    """A dataset name, or InvalidInput('training_name', ...)."""
    return check_name(name, "training_name")


@dataclass(slots=True)
class UploadSummary:
    """One upload request: saved/skipped/renamed are this request's; counts are over the whole dataset after it."""

    dataset: str
    saved: list[str]
    skipped: list[dict[str, str]]
    renamed: list[dict[str, str]]
    images: int
    captions: int
    images_without_caption: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(slots=True)
class DatasetInfo:
    """A dataset on disk: counts, unpaired files, size, files and what earlier uploads skipped."""

    name: str
    images: int
    captions: int
    images_without_caption: list[str]
    captions_without_image: list[str]
    size_bytes: int
    files: list[dict[str, Any]]
    skipped: list[dict[str, str]]
    modified: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class DatasetStore:
    """Datasets under the workspace's training_data folder."""

    def __init__(self, workspace: Workspace, *, max_file_bytes: int, max_upload_bytes: int, max_zip_entries: int):
        self.workspace = workspace
        self.max_file_bytes = max_file_bytes
        self.max_upload_bytes = max_upload_bytes
        self.max_zip_entries = max_zip_entries
        self._lock = threading.Lock()

    # ----- paths

    def folder(self, name: str) -> Path:
        """The dataset's folder (it may not exist yet)."""
        validate_name(name)
        return self.workspace.child(self.workspace.training_data, name, field="training_name")

    def _existing(self, name: str) -> Path:
        folder = self.folder(name)
        if not folder.is_dir():
            raise NotFound(f"dataset '{name}' does not exist", field="training_name")
        return folder

    # ----- uploads

    def save_stream(self, name: str, filename: str, stream: Readable) -> FileResult:
        """Save one incoming file (image, caption or zip), streamed to disk; a file over the limit is skipped."""
        results = self._receive(name, [(filename, stream)])
        return results[0]

    def save_files(self, name: str, files: Iterable[tuple[str, Readable | None]]) -> UploadSummary:
        """Save many files in one request; all or nothing: over max_upload_bytes (TooLarge) nothing is kept."""
        results = self._receive(name, files)
        return self._summary(name, results)

    def save_base64(self, name: str, files: list[dict[str, Any]]) -> UploadSummary:
        """Save the contract's files [{filename, content (base64), content_type}]; content_type is ignored."""
        validate_name(name)
        if not isinstance(files, list) or not files:
            raise InvalidInput("files", "must be a non-empty list of {filename, content, content_type}")
        for index, item in enumerate(files):
            if not isinstance(item, dict):
                raise InvalidInput(f"files[{index}]", "must be an object with filename and content")
            for key in ("filename", "content"):
                if not isinstance(item.get(key), str) or not item[key]:
                    raise InvalidInput(f"files[{index}].{key}", "is required")
        return self.save_files(name, decode_base64_files(files))

    def _receive(self, name: str, files: Iterable[tuple[str, Readable | None]]) -> list[FileResult]:
        pipeline = UploadPipeline(
            max_file_bytes=self.max_file_bytes,
            max_upload_bytes=self.max_upload_bytes,
            max_zip_entries=self.max_zip_entries,
        )
        folder = self.folder(name)
        existed = folder.exists()
        try:
            return pipeline.run(folder, files, self._lock)
        except BaseException as exc:
            # A dataset this request created stays absent, not empty: the disk filled, the body was refused
            # part-way (limits, a malformed or cut-off body), or the client went away.
            if not existed:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            if not (isinstance(exc, OSError) and is_disk_full(exc)):
                raise
            raise InsufficientStorage(
                "files: the disk is full; nothing from this upload was kept (free space, then upload again)",
                field="files",
            ) from exc

    # ----- reading

    def _summary(self, name: str, results: list[FileResult]) -> UploadSummary:
        info = self.get(name)
        return UploadSummary(
            dataset=name,
            saved=list(dict.fromkeys(s for r in results for s in r.saved)),
            skipped=[s for r in results for s in r.skipped],
            renamed=[s for r in results for s in r.renamed],
            images=info.images,
            captions=info.captions,
            images_without_caption=info.images_without_caption,
        )

    def get(self, name: str) -> DatasetInfo:
        """One dataset's counts, unpaired images and captions, files, size and recorded skips."""
        folder = self._existing(name)
        files: list[dict[str, Any]] = []
        newest = folder.stat().st_mtime
        for path in _dataset_files(folder):
            st = path.stat()
            files.append({"path": path.relative_to(folder).as_posix(), "size": st.st_size})
            newest = max(newest, st.st_mtime)
        return dataset_info(name, files, skipped=read_skipped(folder), modified=iso_utc(newest))

    # ----- deleting

    def delete(self, name: str) -> None:
        """Remove a whole dataset folder."""
        shutil.rmtree(self._existing(name))

    def delete_file(self, name: str, relpath: str) -> None:
        """Remove one file of a dataset, given relative to the dataset folder."""
        folder = self._existing(name)
        if not isinstance(relpath, str) or not relpath or "\x00" in relpath or "\\" in relpath:
            raise PathEscape("path", "must be a plain path relative to the dataset")
        candidate = PurePosixPath(relpath)
        if candidate.is_absolute() or ".." in candidate.parts:
            raise PathEscape("path", "must stay inside the dataset")
        target = (folder / relpath).resolve()
        if not target.is_relative_to(folder) or target == folder:
            raise PathEscape("path", "points outside the dataset")
        if not target.is_file():
            raise NotFound(f"file '{relpath}' does not exist in dataset '{name}'", field="path")
        target.unlink()

    # Defined last: in the class body this name shadows the builtin for any annotation after it.
    def list(self) -> list[DatasetInfo]:
        """Every dataset, by name."""
        root = self.workspace.training_data
        if not root.is_dir():
            return []
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and is_valid_name(p.name))
        return [self.get(n) for n in names]


def dataset_info(
    name: str, files: list[dict[str, Any]], *, skipped: list[dict[str, str]], modified: str
) -> DatasetInfo:
    """A dataset's counts and unpaired images and captions from its files ({path, size}), wherever they are kept."""
    images = [f["path"] for f in files if os.path.splitext(f["path"])[1].lower() in IMAGE_SUFFIXES]
    captions = [f["path"] for f in files if os.path.splitext(f["path"])[1].lower() == ".txt"]
    image_stems = {_stem(r) for r in images}
    caption_stems = {_stem(r) for r in captions}
    return DatasetInfo(
        name=name,
        images=len(images),
        captions=len(captions),
        images_without_caption=[r for r in images if _stem(r) not in caption_stems],
        captions_without_image=[r for r in captions if _stem(r) not in image_stems],
        size_bytes=sum(int(f["size"]) for f in files),
        files=files,
        skipped=skipped,
        modified=modified,
    )


def _dataset_files(folder: Path) -> Iterable[Path]:
    """The dataset's own files as ai-toolkit sees them: hidden names and its caches left out."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _CACHE_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not name.startswith(".") and path.is_file():
                yield path


def _stem(rel: str) -> str:
    """The pairing key of a file: its folder and stem (img2.jpg and img2.txt share one)."""
    return os.path.splitext(rel)[0]
