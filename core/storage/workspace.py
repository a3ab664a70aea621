"""The workspace on disk: its folders, safe resolution of caller paths, atomic writes."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from core.errors import PathEscape

SUBDIRS = ("training_data", "models", "output", "logs")
# The seed's clients address files as /workspace/...; on a volume mounted elsewhere they still mean the root.
SEED_ROOT = "/workspace"
# Percent-encoded '/', '\' and '.': a path from a URL is decoded once, so these can only be a trick.
_ENCODED = re.compile(r"%(2f|5c|2e|25)", re.IGNORECASE)
# The process table's SQLite file and its WAL/SHM companions live at the root and are never served.
_DB_FILE = re.compile(r".*\.(db|sqlite|sqlite3)(-wal|-shm|-journal)?")


class Workspace:
    """The folder tree every job reads and writes, with one gate for caller paths."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()

    @property
    def training_data(self) -> Path:
        """Datasets, one folder per training name."""
        return self.root / "training_data"

    @property
    def models(self) -> Path:
        """Base models on disk and the Hugging Face cache."""
        return self.root / "models"

    @property
    def output(self) -> Path:
        """Training outputs (one folder per job) and generated images."""
        return self.root / "output"

    @property
    def generated(self) -> Path:
        """Generated images, one folder per generation job."""
        return self.output / "generated"

    @property
    def logs(self) -> Path:
        """One log file per job."""
        return self.root / "logs"

    @property
    def hf_cache(self) -> Path:
        """Hugging Face hub cache kept in the workspace, so a network volume keeps downloads."""
        return self.models / "huggingface"

    def ensure(self) -> Workspace:
        """Create the root and its standard folders; return self."""
        for name in SUBDIRS:
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.generated.mkdir(parents=True, exist_ok=True)
        return self

    def resolve(self, path: str | os.PathLike[str], *, field: str = "path") -> Path:
        """Resolve a caller path (relative to the root, or absolute under it) and refuse any escape."""
        raw = os.fspath(path)
        if not isinstance(raw, str):
            raise PathEscape(field, "must be a text path")
        if "\x00" in raw:
            raise PathEscape(field, "contains a NUL byte")
        if "\\" in raw or _ENCODED.search(raw):
            raise PathEscape(field, "contains an encoded or backslash separator")
        if raw.startswith("~"):
            raise PathEscape(field, "home-relative paths are not allowed")
        candidate = Path(raw)
        if candidate.is_absolute():
            text = candidate.as_posix()
            if str(self.root) != SEED_ROOT and (text == SEED_ROOT or text.startswith(SEED_ROOT + "/")):
                candidate = self.root / text[len(SEED_ROOT) :].lstrip("/")
        else:
            candidate = self.root / candidate
        resolved = candidate.resolve(strict=False)
        if resolved != self.root and not resolved.is_relative_to(self.root):
            raise PathEscape(field, "points outside the workspace")
        return resolved

    def is_private(self, path: Path) -> bool:
        """True for files the server keeps for itself: its database at the root, and hidden names."""
        rel = Path(path).resolve().relative_to(self.root)
        if any(part.startswith(".") for part in rel.parts):
            return True
        return len(rel.parts) == 1 and _DB_FILE.fullmatch(rel.name) is not None

    def relative(self, path: Path) -> str:
        """The workspace-relative POSIX form of an absolute path inside the workspace."""
        rel = Path(path).resolve().relative_to(self.root).as_posix()
        return "" if rel == "." else rel

    def child(self, base: Path, name: str, *, field: str) -> Path:
        """A single path component under base, refusing separators, dot names and escapes."""
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\x00" in name:
            raise PathEscape(field, "must be a plain name without separators")
        target = (base / name).resolve(strict=False)
        if not target.is_relative_to(self.root) or target.parent != base.resolve():
            raise PathEscape(field, "points outside its folder")
        return target


@contextlib.contextmanager
def atomic_writer(path: Path, *, durable: bool = True) -> Iterator[BinaryIO]:
    """Write a file through a temporary sibling renamed into place; nothing is left on failure.

    durable=False skips the fsync, for files that are rewritten from the database when lost.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to path atomically."""
    with atomic_writer(path) as handle:
        handle.write(data)


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    """Write UTF-8 text to path atomically."""
    with atomic_writer(path, durable=durable) as handle:
        handle.write(text.encode("utf-8"))
