"""Resumable, verified downloads: bytes go to `<file>.part`, a rerun continues it, the sha256 decides."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from lorapod_cli.errors import CliError, ExitCode

# (start offset, whole size, bytes, sha256 hex of the whole file) per block; the first block may be empty.
Blocks = Iterator[tuple[int, int, bytes, str | None]]
Fetch = Callable[[int], Blocks]
BAR_FROM_BYTES = 1024 * 1024  # smaller files finish before a bar would be seen


def digest_from_header(value: str | None) -> str | None:
    """The sha256 (hex) in an RFC 9530 `Repr-Digest: sha-256=:<base64>:` header."""
    for item in (value or "").split(","):
        key, _, encoded = item.strip().partition("=")
        if key.strip().lower() == "sha-256":
            try:
                return base64.b64decode(encoded.strip().strip(":"), validate=True).hex()
            except (binascii.Error, ValueError):
                return None
    return None


def safe_relative(name: str) -> Path:
    """An artifact name as a path under the output folder (no absolute paths, no '..')."""
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".", "..", "/")]
    if not parts:
        raise CliError(f"artifact name {name!r} is not a file name", ExitCode.usage)
    return Path(*parts)


def sha256_of(path: Path) -> str:
    """A file's sha256 (hex)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def download(dest: Path, fetch: Fetch, console: Console, *, quiet: bool = False) -> dict[str, object]:
    """Fetch into dest through dest.part, resuming what a previous try left, and verify the sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    expected: str | None = None
    size = offset
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=True,
        disable=quiet,
    )
    with progress, part.open("r+b" if offset else "wb") as out:
        out.seek(offset)
        task = None
        for start, total, block, sha in fetch(offset):
            expected, size = sha or expected, total
            if task is None and total >= BAR_FROM_BYTES:
                task = progress.add_task(dest.name, total=total, completed=start)
            if start != out.tell():  # the server sent the whole file instead of the rest: start over
                out.seek(start)
                out.truncate()
            out.write(block)
            if task is not None:
                progress.update(task, completed=start + len(block))
    if expected is None:
        raise CliError(f"{dest.name}: the server sent no sha256, so the file cannot be verified", ExitCode.checksum)
    actual = sha256_of(part)
    if actual != expected:
        part.unlink()
        raise CliError(
            f"{dest.name}: sha256 mismatch (got {actual[:12]}…, server has {expected[:12]}…); the partial file "
            "was removed, run the download again",
            ExitCode.checksum,
        )
    part.replace(dest)
    return {"path": str(dest), "size": size, "sha256": actual, "resumed_from": offset}
