"""Browsing the workspace and serving its files in payload-sized chunks or as one zip on disk."""

from __future__ import annotations

import binascii
import fnmatch
import hashlib
import os
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import InvalidInput, NotFound, PathEscape
from core.storage.media import IMAGE_SUFFIXES
from core.storage.names import check_name
from core.storage.workspace import Workspace, atomic_writer

KINDS = frozenset({"image", "model", "caption", "config", "log", "archive", "other"})
_KIND_BY_SUFFIX = {
    **dict.fromkeys((*IMAGE_SUFFIXES, ".gif", ".bmp"), "image"),
    **dict.fromkeys((".safetensors", ".ckpt", ".pt", ".pth", ".bin"), "model"),
    **dict.fromkeys((".txt", ".caption"), "caption"),
    **dict.fromkeys((".yaml", ".yml", ".json", ".toml"), "config"),
    **dict.fromkeys((".log",), "log"),
    **dict.fromkeys((".zip", ".tar", ".gz", ".tgz"), "archive"),
}
# Compressing these again costs CPU and saves nothing.
_STORED_SUFFIXES = frozenset(
    {
        ".safetensors",
        ".ckpt",
        ".pt",
        ".pth",
        ".bin",
        ".png",
        ".jpg",
        ".jpeg",
        ".webp",
        ".gif",
        ".zip",
        ".gz",
        ".tgz",
        ".mp4",
        ".webm",
    }
)
# Room for the JSON envelope around a chunk's base64 (field names, status, ids).
ENVELOPE_RESERVE = 64 * 1024
_READ_SIZE = 1024 * 1024


def iso_utc(timestamp: float) -> str:
    """A POSIX timestamp as ISO 8601 in UTC with a 'Z', the form every lorapod view uses."""
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def file_kind(path: Path, workspace: Workspace | None = None) -> str:
    """What a file is to a user: image, model, caption, config, log, archive or other."""
    suffix = path.suffix.lower()
    if workspace is not None and suffix == ".txt" and path.is_relative_to(workspace.logs):
        return "log"
    if path.name == "log.txt":
        return "log"
    return _KIND_BY_SUFFIX.get(suffix, "other")


@dataclass(frozen=True, slots=True)
class FileInfo:
    """One file of the workspace as a listing shows it."""

    path: str  # workspace-relative, POSIX
    size: int
    modified: str  # ISO 8601, UTC
    kind: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A slice of one file, base64-encoded, with where to continue and the whole file's checksum."""

    path: str
    size: int
    offset: int
    length: int
    next_offset: int | None
    done: bool
    sha256: str
    content_b64: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def walk_files(workspace: Workspace, base: Path) -> Iterator[Path]:
    """Regular files under base in sorted order, skipping hidden names, the database and escaping links."""
    skip_dirs = {workspace.hf_cache} if not base.is_relative_to(workspace.hf_cache) else set()
    for dirpath, dirnames, filenames in os.walk(base):
        current = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and current / d not in skip_dirs)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = current / name
            if current == workspace.root and workspace.is_private(current / name):
                continue
            if path.is_symlink():
                # A link may point anywhere; only what it resolves to inside the workspace is served.
                target = path.resolve()
                if not target.is_relative_to(workspace.root):
                    continue
            if path.is_file():
                yield path


def list_files(
    workspace: Workspace,
    directory: str | None = None,
    pattern: str | None = None,
    *,
    kinds: set[str] | None = None,
    limit: int = 1000,
) -> list[FileInfo]:
    """Files under the workspace or one of its folders, filtered by a name glob and kinds, at most limit."""
    base = _directory(workspace, directory)
    if pattern is not None:
        if not isinstance(pattern, str) or not pattern or any(c in pattern for c in "/\\\x00"):
            raise InvalidInput("pattern", "must be a file-name glob such as '*.png', without '/'")
        pattern = pattern.lower()
    if kinds is not None and not set(kinds) <= KINDS:
        raise InvalidInput("kinds", f"must be among {', '.join(sorted(KINDS))}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInput("limit", "must be a positive integer")
    found: list[FileInfo] = []
    for path in walk_files(workspace, base):
        # Case-insensitive, so '*.png' also finds 'IMG_1.PNG' from a camera.
        if pattern is not None and not fnmatch.fnmatchcase(path.name.lower(), pattern):
            continue
        kind = file_kind(path, workspace)
        if kinds is not None and kind not in kinds:
            continue
        stat = path.stat()
        rel = path.relative_to(workspace.root).as_posix()
        found.append(FileInfo(path=rel, size=stat.st_size, modified=iso_utc(stat.st_mtime), kind=kind))
        if len(found) >= limit:
            break
    return found


def _directory(workspace: Workspace, directory: str | None) -> Path:
    if directory is None or directory == "":
        return workspace.root
    if not isinstance(directory, str):
        raise InvalidInput("directory", "must be a path")
    base = workspace.resolve(directory, field="directory")
    if not base.is_dir():
        raise NotFound(f"directory '{directory}' does not exist in the workspace", field="directory")
    return base


class _ShaCache:
    """Whole-file SHA-256 by (real path, size, mtime_ns), so a 2 GB file is hashed once, not per chunk."""

    def __init__(self, capacity: int = 256) -> None:
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int, int], str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, stat: os.stat_result) -> str:
        """The file's digest, from the cache when the file has not changed."""
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        digest = hash_file(path)
        with self._lock:
            self._items[key] = digest
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return digest


def hash_file(path: Path) -> str:
    """A file's SHA-256 (hex), read in chunks; uncached (file_sha256 caches it per version of the file)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_READ_SIZE):
            digest.update(block)
    return digest.hexdigest()


_sha_cache = _ShaCache()


def file_sha256(path: Path, stat: os.stat_result) -> str:
    """A file's whole SHA-256 (hex), hashed once per version of the file."""
    return _sha_cache.get(path, stat)


def read_chunk(
    workspace: Workspace, path: str, *, offset: int = 0, length: int | None = None, max_length: int
) -> Chunk:
    """length bytes of a workspace file from offset (at most max_length), base64, with the file's SHA-256."""
    if not isinstance(path, str) or not path:
        raise InvalidInput("file_path", "is required")
    target = workspace.resolve(path, field="file_path")
    if not target.exists() or workspace.is_private(target):
        raise NotFound(f"file '{path}' does not exist in the workspace", field="file_path")
    if not target.is_file():
        raise InvalidInput("file_path", "is not a regular file")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise InvalidInput("max_length", "must be a positive integer")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise InvalidInput("length", "must be a positive integer")
    if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
        raise InvalidInput("offset", "must be a non-negative integer")
    want = max_length if length is None else min(length, max_length)
    with target.open("rb", buffering=0) as handle:
        stat = os.fstat(handle.fileno())
        if offset > stat.st_size:
            raise InvalidInput("offset", f"is past the end of the file ({stat.st_size} bytes)")
        data = _read_at(handle.fileno(), offset, min(want, stat.st_size - offset))
    end = offset + len(data)
    next_offset = end if end < stat.st_size else None
    length_read = len(data)
    # A chunk is up to 7.5 MB: each copy is dropped as soon as the next exists, so at most two are alive at once.
    encoded = binascii.b2a_base64(data, newline=False)
    del data
    return Chunk(
        path=workspace.relative(target),
        size=stat.st_size,
        offset=offset,
        length=length_read,
        next_offset=next_offset,
        done=next_offset is None,
        sha256=_sha_cache.get(target, stat),
        content_b64=encoded.decode("ascii"),
    )


def _read_at(fd: int, offset: int, size: int) -> bytearray:
    """size bytes from offset, read into one buffer of that size (no growing or trimming copies); short at EOF."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    while filled < size and (got := os.preadv(fd, [view[filled:]], offset + filled)):
        filled += got
    view.release()
    del buffer[filled:]  # the file shrank meanwhile
    return buffer


def max_raw_chunk(payload_limit_bytes: int, *, reserve: int = ENVELOPE_RESERVE) -> int:
    """The largest raw chunk whose base64 plus an envelope of `reserve` bytes fits the payload limit."""
    raw = (payload_limit_bytes - reserve) * 3 // 4
    raw -= raw % 3
    if raw < 3:
        raise InvalidInput("payload_limit_bytes", f"must be larger than the {reserve}-byte envelope reserve")
    return raw


def resolve_many(workspace: Workspace, file_paths: list[str] | None, directory: str | None) -> list[Path]:
    """The files named by a list of paths and/or a folder (walked recursively), each inside the workspace."""
    if file_paths is None and not directory:
        raise InvalidInput("file_paths", "give file_paths or directory")
    found: dict[Path, None] = {}
    if file_paths is not None:
        if not isinstance(file_paths, list) or not all(isinstance(p, str) for p in file_paths):
            raise InvalidInput("file_paths", "must be a list of paths")
        for index, raw in enumerate(file_paths):
            field = f"file_paths[{index}]"
            target = workspace.resolve(raw, field=field)
            if target.is_dir():
                found.update(dict.fromkeys(walk_files(workspace, target)))
            elif target.is_file():
                found[target] = None
            else:
                raise NotFound(f"file '{raw}' does not exist in the workspace", field=field)
    if directory:
        found.update(dict.fromkeys(walk_files(workspace, _directory(workspace, directory))))
    if not found:
        raise InvalidInput("directory" if directory else "file_paths", "names no files")
    return list(found)


def bundle_key(paths: list[Path]) -> str:
    """A short digest of the files' paths, sizes and mtimes: equal keys mean an unchanged bundle."""
    digest = hashlib.sha256()
    for path in sorted({Path(p).resolve() for p in paths}):
        stat = path.stat()
        digest.update(f"{path}\x00{stat.st_size}\x00{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def build_zip(workspace: Workspace, paths: list[Path], *, bundle_name: str) -> Path:
    """Zip the files on disk into output/bundles/<bundle_name>.zip, reusing it when its inputs are unchanged."""
    check_name(bundle_name, "bundle_name")
    files: dict[Path, str] = {}
    for path in paths:
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(workspace.root):
            raise PathEscape("file_paths", f"'{path}' points outside the workspace")
        if not resolved.is_file():
            raise NotFound(f"file '{path}' does not exist in the workspace", field="file_paths")
        files[resolved] = workspace.relative(resolved)
    if not files:
        raise InvalidInput("file_paths", "names no files")
    target = workspace.output / "bundles" / f"{bundle_name}.zip"
    # The key goes into the zip comment, so a reused name with changed inputs is rebuilt, not served stale.
    key = bundle_key(list(files)).encode()
    if target.is_file() and _zip_comment(target) == key:
        return target
    with atomic_writer(target) as handle, zipfile.ZipFile(handle, "w", allowZip64=True) as archive:
        for source, arcname in sorted(files.items(), key=lambda item: item[1]):
            method = zipfile.ZIP_STORED if source.suffix.lower() in _STORED_SUFFIXES else zipfile.ZIP_DEFLATED
            archive.write(source, arcname, compress_type=method)
        archive.comment = key
    return target


def _zip_comment(path: Path) -> bytes | None:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.comment
    except (OSError, zipfile.BadZipFile):
        return None
