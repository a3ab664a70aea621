"""Reading a job's log for people: incremental by byte offset or its last lines, progress-bar redraws collapsed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

from core.errors import InvalidInput

# One read returns at most this much of the file, so a huge log never lands in memory at once.
MAX_READ_BYTES = 1024 * 1024
MAX_TAIL_LINES = 10_000
_BLOCK = 64 * 1024


def collapse_line(raw: str) -> str:
    """What a terminal shows for one line holding \\r redraws: its last non-blank state."""
    pieces = [piece for piece in raw.split("\r") if piece.strip()]
    return pieces[-1].rstrip() if pieces else ""


def collapse(text: str) -> list[str]:
    """Split text into lines, each collapsed to its last redraw (a trailing newline adds no empty line)."""
    if not text:
        return []
    lines = text.split("\n")
    if text.endswith("\n"):
        lines.pop()
    return [collapse_line(line) for line in lines]


def read_log(
    path: Path,
    offset: int | None = None,
    tail: int | None = None,
    *,
    complete_only: bool = False,
    max_bytes: int = MAX_READ_BYTES,
) -> tuple[str, int]:
    """A log's text from offset (or its last `tail` lines), collapsed, and the offset to read from next.

    The next offset sits after the last complete line returned, so an incremental reader never gets a
    finished line twice; a line still being written (a progress bar) is returned unless complete_only,
    and comes again, in its newer state, once finished.
    """
    if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int) or offset < 0):
        raise InvalidInput("offset", "must be a non-negative integer")
    if tail is not None and (isinstance(tail, bool) or not isinstance(tail, int) or not 1 <= tail <= MAX_TAIL_LINES):
        raise InvalidInput("tail", f"must be an integer between 1 and {MAX_TAIL_LINES}")
    start = offset or 0
    try:
        with Path(path).open("rb") as handle:
            return _read(handle, start, tail, complete_only=complete_only, max_bytes=max_bytes)
    except FileNotFoundError:  # no output yet (a queued job)
        if start:
            raise InvalidInput("offset", "is past the end of the log (it has no content yet)") from None
        return "", 0


def _read(handle: BinaryIO, start: int, tail: int | None, *, complete_only: bool, max_bytes: int) -> tuple[str, int]:
    size = os.fstat(handle.fileno()).st_size
    if start > size:
        raise InvalidInput("offset", f"is past the end of the log ({size} bytes)")
    if tail is not None:
        start = max(start, _tail_start(handle, size, tail, floor=start, max_bytes=max_bytes))
    handle.seek(start)
    data = handle.read(min(size - start, max_bytes))
    cut = data.rfind(b"\n") + 1
    if cut == 0 and len(data) >= max_bytes:
        # One line longer than a whole read (a bar redrawn for hours): hand it over, or a reader would stall.
        cut = len(data)
    text = (data if not complete_only else data[:cut]).decode("utf-8", errors="replace")
    lines = collapse(text)
    if tail is not None:
        lines = lines[-tail:]
    body = "\n".join(lines) + ("\n" if lines else "")
    return body, start + cut


def _tail_start(reader: BinaryIO, size: int, lines: int, *, floor: int, max_bytes: int) -> int:
    """The byte offset where the last `lines` lines begin, scanning back from the end in blocks."""
    position = size
    # A newline ending the file closes the last line rather than starting a new one.
    if size:
        reader.seek(size - 1)
        if reader.read(1) == b"\n":
            position = size - 1
    found = 0
    while (step := min(_BLOCK, position - floor, max_bytes - (size - position))) > 0:
        position -= step
        reader.seek(position)
        block = reader.read(step)
        index = len(block)
        while (index := block.rfind(b"\n", 0, index)) >= 0:
            found += 1
            if found == lines:
                return position + index + 1
    return max(position, floor)
