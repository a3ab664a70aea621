"""One dataset upload: files streamed into a hidden staging folder, checked by content, zips unpacked safely,
then moved into the dataset all at once (or not at all)."""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
import threading
import time
import zipfile
import zlib
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from core.errors import TooLarge
from core.storage.media import CAPTION_SUFFIXES, IMAGE_SUFFIXES, detect_image_type
from core.storage.workspace import atomic_write_text

# The extension a file gets when its name does not match its content, and the names each type may keep.
_CANONICAL = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
_ACCEPTED = {"png": {".png"}, "jpeg": {".jpg", ".jpeg"}, "webp": {".webp"}}
SKIPPED_FILE = ".lorapod-skipped.json"
_STAGING_PREFIX = ".lorapod-staging-"
_STALE_STAGING_SECONDS = 24 * 3600
# macOS archive noise, dropped silently rather than reported as skipped.
_NOISE = re.compile(r"(^|/)(__MACOSX/|\._[^/]*$|\.DS_Store$)")
_MAX_SKIPPED_KEPT = 1000
_CHUNK = 1024 * 1024
_HEAD = 32


class Readable(Protocol):
    """What an incoming file is read through: a binary file, or a multipart part still arriving."""

    def read(self, size: int = -1, /) -> bytes:
        """The next bytes, at most size; b"" at the end."""
        ...


def safe_basename(filename: str) -> str | None:
    """The last component of a caller's file name, or None when nothing safe is left (hidden, NUL, '..')."""
    if not isinstance(filename, str) or "\x00" in filename:
        return None
    base = filename.replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not base or base.startswith(".") or len(base.encode("utf-8", "surrogatepass")) > 255:
        return None
    if any(ord(c) < 32 for c in base):
        return None
    return base


class UploadPipeline:
    """Receives one request's files under the size and entry limits."""

    def __init__(self, *, max_file_bytes: int, max_upload_bytes: int, max_zip_entries: int) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_upload_bytes = max_upload_bytes
        self.max_zip_entries = max_zip_entries

    def run(self, folder: Path, files: Iterable[tuple[str, Readable | None]], lock: threading.Lock) -> list[FileResult]:
        """Receive every file into staging, then move them into the dataset at once under lock."""
        folder.mkdir(parents=True, exist_ok=True)  # parents: a fresh workspace has no training_data yet
        _remove_stale_staging(folder)
        staging = _Staging(folder, self.max_upload_bytes)
        results: list[FileResult] = []
        try:
            for filename, stream in files:
                result = FileResult(filename=filename)
                if stream is None:
                    result.skipped.append({"filename": filename, "reason": "content is not valid base64"})
                else:
                    self._receive(staging, filename, stream, result)
                results.append(result)
            with lock:
                staging.commit()
                self._remember_skipped(folder, results)
        finally:
            staging.discard()
        return results

    def _receive(self, staging: _Staging, filename: str, stream: Readable, result: FileResult) -> None:
        """Stream one caller file into staging, then classify it (or unpack it when it is a zip)."""
        base = safe_basename(filename)
        if base is None:
            result.skipped.append({"filename": filename, "reason": "file name is empty, hidden or not allowed"})
            return
        temp = staging.new_temp()
        try:
            head, size = _copy(stream, temp, self.max_file_bytes, staging)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        if size is None:
            temp.unlink(missing_ok=True)
            reason = f"larger than the per-file limit of {self.max_file_bytes} bytes"
            result.skipped.append({"filename": filename, "reason": reason})
            return
        if head.startswith(b"PK\x03\x04"):
            try:
                self._unpack(staging, temp, filename, result)
            finally:
                temp.unlink(missing_ok=True)
            return
        self._classify(staging, temp, head, base, "", filename, result)

    def _classify(
        self, staging: _Staging, temp: Path, head: bytes, base: str, subdir: str, shown: str, result: FileResult
    ) -> None:
        """Keep a staged file as an image or caption under its final name, or drop it with a reason."""
        stem, suffix = os.path.splitext(base)
        suffix = suffix.lower()
        kind = detect_image_type(head)
        reason: str | None = None
        final: str | None = None
        if kind in _CANONICAL:
            final = base if suffix in _ACCEPTED[kind] else stem + _CANONICAL[kind]
        elif kind is not None:
            reason = f"{kind.upper()} is not a format ai-toolkit trains on (use PNG, JPEG or WebP)"
        elif head.startswith(b"PK\x03\x04"):
            reason = "nested archives are not unpacked"
        elif suffix in CAPTION_SUFFIXES:
            # ai-toolkit reads captions as <stem>.txt, so a .caption file is stored under that name.
            final = stem + ".txt" if _is_utf8(temp) else None
            reason = None if final else "caption is not UTF-8 text"
        elif suffix in IMAGE_SUFFIXES:
            reason = "not an image: content is not PNG, JPEG or WebP"
        else:
            reason = "unsupported file: only PNG, JPEG and WebP images, .txt captions and .zip archives are accepted"
        if final is None or not stem:
            temp.unlink(missing_ok=True)
            result.skipped.append({"filename": shown, "reason": reason or "file name has no stem"})
            return
        rel = f"{subdir}/{final}" if subdir else final
        if not (staging.folder / rel).resolve().is_relative_to(staging.folder):
            temp.unlink(missing_ok=True)
            result.skipped.append({"filename": shown, "reason": "path points outside the dataset"})
            return
        staging.add(rel, temp)
        result.saved.append(rel)
        if final != base:
            why = f"content is {kind.upper()}" if kind else "captions are stored as .txt"
            result.renamed.append({"from": shown, "to": rel, "reason": why})

    def _unpack(self, staging: _Staging, archive_path: Path, filename: str, result: FileResult) -> None:
        """Unpack a zip into staging after checking every entry; a refused zip contributes nothing."""
        inner = FileResult(filename=filename)
        local = staging.branch()
        try:
            with zipfile.ZipFile(archive_path) as archive:
                members = self._check_archive(archive, staging.folder)
                self._extract(archive, members, local, inner)
        except _Refused as refused:
            local.drop()
            result.skipped.append({"filename": filename, "reason": f"archive refused, nothing unpacked: {refused}"})
            return
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
            local.drop()
            result.skipped.append({"filename": filename, "reason": f"archive is corrupt or unsupported: {exc}"})
            return
        staging.merge(local)
        result.saved.extend(inner.saved)
        result.skipped.extend(inner.skipped)
        result.renamed.extend(inner.renamed)

    def _check_archive(self, archive: zipfile.ZipFile, folder: Path) -> list[tuple[zipfile.ZipInfo, str]]:
        """Every entry's name, type and declared size, checked before a single byte is extracted."""
        infos = archive.infolist()
        if len(infos) > self.max_zip_entries:
            raise _Refused(f"it has {len(infos)} entries, more than the limit of {self.max_zip_entries}")
        members: list[tuple[zipfile.ZipInfo, str]] = []
        declared = 0
        for info in infos:
            name = info.filename.replace("\\", "/")
            if "\x00" in name or name.startswith("/") or re.match(r"[A-Za-z]:(/|$)", name):
                raise _Refused(f"entry '{info.filename}' has an absolute path")
            parts = PurePosixPath(name).parts
            if ".." in parts:
                raise _Refused(f"entry '{info.filename}' climbs out of the dataset with '..'")
            if not (folder / name).resolve().is_relative_to(folder):
                raise _Refused(f"entry '{info.filename}' points outside the dataset")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise _Refused(f"entry '{info.filename}' is a symbolic link")
            if info.flag_bits & 0x1:
                raise _Refused(f"entry '{info.filename}' is encrypted")
            declared += info.file_size
            if declared > self.max_upload_bytes:
                raise _Refused(f"it unpacks to more than the limit of {self.max_upload_bytes} bytes")
            members.append((info, name.rstrip("/")))
        return members

    def _extract(
        self,
        archive: zipfile.ZipFile,
        members: list[tuple[zipfile.ZipInfo, str]],
        staging: _Staging,
        result: FileResult,
    ) -> None:
        """Extract the checked entries, counting real bytes: headers can lie about sizes."""
        total = 0
        for info, name in members:
            if not name or _NOISE.search(name + ("/" if info.is_dir() else "")):
                continue
            parts = name.split("/")
            if any(part.startswith(".") for part in parts):
                result.skipped.append({"filename": name, "reason": "hidden file (ai-toolkit ignores names with '.')"})
                continue
            if any(safe_basename(part) != part for part in parts):
                reason = "file name is not allowed (too long, control characters or edge spaces)"
                result.skipped.append({"filename": name, "reason": reason})
                continue
            if info.is_dir():
                staging.dirs.add(name)
                continue
            if info.file_size > self.max_file_bytes:
                reason = f"larger than the per-file limit of {self.max_file_bytes} bytes"
                result.skipped.append({"filename": name, "reason": reason})
                continue
            temp = staging.new_temp()
            try:
                head, total = self._copy_member(archive, info, name, temp, total)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
            subdir, _, base = name.rpartition("/")
            self._classify(staging, temp, head, base, subdir, name, result)

    def _copy_member(
        self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, temp: Path, total: int
    ) -> tuple[bytes, int]:
        """Copy one entry to temp; return its first bytes and the running total of unpacked bytes."""
        head = b""
        written = 0
        with archive.open(info) as source, temp.open("wb") as sink:
            while block := source.read(_CHUNK):
                written += len(block)
                total += len(block)
                if written > info.file_size or written > self.max_file_bytes:
                    raise _Refused(f"entry '{name}' is larger than its header says")
                if total > self.max_upload_bytes:
                    raise _Refused(f"it unpacks to more than the limit of {self.max_upload_bytes} bytes")
                if len(head) < _HEAD:
                    head += block[: _HEAD - len(head)]
                sink.write(block)
        return head, total

    def _remember_skipped(self, folder: Path, results: list[FileResult]) -> None:
        """Merge this request's skips into the dataset's record; a file saved now clears its old skip."""
        saved_names = {r.filename for r in results if r.saved} | {s for r in results for s in r.saved}
        skipped = [s for r in results for s in r.skipped]
        previous = read_skipped(folder)
        fresh = {s["filename"] for s in skipped} | saved_names
        record = ([s for s in previous if s.get("filename") not in fresh] + skipped)[-_MAX_SKIPPED_KEPT:]
        if record != previous:
            atomic_write_text(folder / SKIPPED_FILE, json.dumps(record, indent=1, ensure_ascii=False))


@dataclass(slots=True)
class FileResult:
    """What became of one incoming file (a zip yields many saved files)."""

    filename: str
    saved: list[str] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    renamed: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class _Refused(Exception):
    """A zip archive refused as a whole; the message is the reason."""


class _Syncer:
    """Flushes staged files to disk in a background thread while the upload goes on, so the disk's write-back
    overlaps the receiving instead of following each file; commit waits for it."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lorapod-upload-fsync")
        self._pending: dict[Path, Future[None]] = {}

    def start(self, path: Path) -> None:
        """Queue path's fsync (once)."""
        if path not in self._pending:
            self._pending[path] = self._pool.submit(_fsync, path)

    def wait(self) -> None:
        """Block until every queued fsync is done; the first failure (a full disk) is raised."""
        for future in self._pending.values():
            future.result()

    def close(self) -> None:
        """Drop the fsyncs not started yet and stop the thread."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:  # replaced or dropped since it was staged
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Staging:
    """One request's files, written into a hidden folder inside the dataset and moved into place at the end."""

    def __init__(
        self, folder: Path, max_upload_bytes: int, directory: Path | None = None, syncer: _Syncer | None = None
    ) -> None:
        self.folder = folder
        self.dir = directory or Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=folder))
        self.files: dict[str, Path] = {}  # final path relative to the dataset -> staged file
        self.dirs: set[str] = set()
        self.received = 0
        self.max_upload_bytes = max_upload_bytes
        self.syncer = syncer or _Syncer()

    def new_temp(self) -> Path:
        """A fresh empty file in the staging folder."""
        fd, name = tempfile.mkstemp(dir=self.dir, suffix=".part")
        os.close(fd)
        return Path(name)

    def add(self, rel: str, staged: Path) -> None:
        """Stage a file for rel; a later file with the same final name replaces an earlier one."""
        previous = self.files.pop(rel, None)
        if previous is not None:
            previous.unlink(missing_ok=True)
        self.files[rel] = staged
        self.syncer.start(staged)

    def commit(self) -> None:
        """Move every staged file to its final place, each by an atomic rename once all are on disk."""
        self.syncer.wait()
        for rel in sorted(self.dirs):
            (self.folder / rel).mkdir(parents=True, exist_ok=True)
        for rel, staged in self.files.items():
            final = self.folder / rel
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, final)

    def branch(self) -> _Staging:
        """An empty staging set in the same folder, merged into this one only if it succeeds."""
        return _Staging(self.folder, self.max_upload_bytes, self.dir, self.syncer)

    def merge(self, other: _Staging) -> None:
        """Take over another set's staged files and folders."""
        for rel, staged in other.files.items():
            self.add(rel, staged)
        self.dirs |= other.dirs

    def drop(self) -> None:
        """Delete this set's staged files now (the folder itself goes in discard)."""
        for staged in self.files.values():
            staged.unlink(missing_ok=True)
        self.files.clear()
        self.dirs.clear()

    def discard(self) -> None:
        """Remove the staging folder and whatever is still in it."""
        self.syncer.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def decode_base64_files(files: list[dict[str, Any]]) -> Iterable[tuple[str, Readable | None]]:
    """Decode each base64 file lazily, so only one decoded file is in memory at a time."""
    for item in files:
        content: str = item["content"]
        if content.startswith("data:") and ";base64," in content[:200]:
            content = content.split(";base64,", 1)[1]
        try:
            # Line breaks from wrapped base64 are not data; anything else outside the alphabet is an error.
            data = base64.b64decode("".join(content.split()), validate=True)
        except (binascii.Error, ValueError):
            yield item["filename"], None
            continue
        yield item["filename"], io.BytesIO(data)


def _copy(stream: Readable, temp: Path, max_bytes: int, staging: _Staging) -> tuple[bytes, int | None]:
    """Copy a stream into temp in chunks; return its first bytes and size, or None as size when over max_bytes."""
    head = b""
    size = 0
    with temp.open("wb") as sink:
        while block := stream.read(_CHUNK):
            size += len(block)
            staging.received += len(block)
            if staging.received > staging.max_upload_bytes:
                raise TooLarge(f"upload is larger than the limit of {staging.max_upload_bytes} bytes", field="files")
            if size > max_bytes:
                return head, None
            if len(head) < _HEAD:
                head += block[: _HEAD - len(head)]
            sink.write(block)
    return head, size


def _is_utf8(path: Path) -> bool:
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with path.open("rb") as handle:
            while block := handle.read(_CHUNK):
                decoder.decode(block)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def read_skipped(folder: Path) -> list[dict[str, str]]:
    """The skip record an earlier upload left in the dataset folder ([] when none or unreadable)."""
    try:
        record = json.loads((folder / SKIPPED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [s for s in record if isinstance(s, dict)] if isinstance(record, list) else []


def _remove_stale_staging(folder: Path) -> None:
    """Staging folders left by a crashed upload; recent ones may belong to an upload still running."""
    cutoff = time.time() - _STALE_STAGING_SECONDS
    for entry in folder.glob(_STAGING_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if entry.is_dir() and entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
