"""Retention of the zips `bulk_download` builds in output/bundles/: removed once unused for a while.

A bundle is downloaded in chunks over many calls, so "in use" means either a call reading it right now or one
that read it within the retention period (the next chunk is probably coming). Last use is the later of the
file's modification time (when it was built) and the last read this process saw.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.storage.workspace import Workspace

log = logging.getLogger("lorapod.bundles")


class BundleKeeper:
    """Tracks reads of bundles and removes those unused for retention_seconds (0 keeps them forever)."""

    def __init__(self, workspace: Workspace, *, retention_seconds: float) -> None:
        self.workspace = workspace
        self.folder = workspace.output / "bundles"
        self.retention_seconds = retention_seconds
        self._lock = threading.Lock()
        self._readers: Counter[str] = Counter()
        self._last_read: dict[str, float] = {}

    def _key(self, path: Path) -> str | None:
        """The bundle's file name when path is one of ours, else None (other files are not our business)."""
        resolved = Path(path).resolve()
        return resolved.name if resolved.parent == self.folder.resolve() else None

    @contextlib.contextmanager
    def reading(self, path: Path) -> Iterator[None]:
        """Mark a bundle as being built or read for the duration, and as used now when done."""
        key = self._key(path)
        if key is None:
            yield
            return
        with self._lock:
            self._readers[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._readers[key] -= 1
                if self._readers[key] <= 0:
                    del self._readers[key]
                self._last_read[key] = time.time()

    def prune(self, now: float | None = None) -> list[Path]:
        """Remove bundles (and leftovers of interrupted builds) unused for the retention period; what went."""
        if self.retention_seconds <= 0 or not self.folder.is_dir():
            return []
        now = time.time() if now is None else now
        removed: list[Path] = []
        for path in sorted(self.folder.iterdir()):
            with self._lock:
                # Checked and removed under the lock, so a read starting now either sees the file or rebuilds it.
                if path.name in self._readers or not path.is_file():
                    continue
                try:
                    last = max(path.stat().st_mtime, self._last_read.get(path.name, 0.0))
                    if now - last < self.retention_seconds:
                        continue
                    path.unlink()
                except FileNotFoundError:
                    pass
                self._last_read.pop(path.name, None)
            removed.append(path)
        if removed:
            log.info("removed %d download bundle(s) unused for %ss", len(removed), int(self.retention_seconds))
        return removed

    def usage(self) -> dict[str, Any]:
        """How many bundles there are and the bytes they hold, for /health."""
        count = size = 0
        if self.folder.is_dir():
            for path in self.folder.iterdir():
                with contextlib.suppress(OSError):
                    if path.is_file():
                        count += 1
                        size += path.stat().st_size
        return {
            "path": self.workspace.relative(self.folder),
            "count": count,
            "bytes": size,
            "retention_seconds": self.retention_seconds,
        }
