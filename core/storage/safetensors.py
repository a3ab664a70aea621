"""The one reader of a .safetensors header: its string metadata, without loading any tensor."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

# safetensors' own reader refuses headers above 100 MB; a LoRA's is tens of KB, so this is generous.
MAX_HEADER_BYTES = 16 * 1024 * 1024


class NotSafetensors(ValueError):
    """The file is not a readable safetensors file."""


def read_metadata(path: Path) -> dict[str, str]:
    """The header's __metadata__ strings ({} when it has none); NotSafetensors when the header is unreadable."""
    try:
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise NotSafetensors("shorter than a safetensors header")
            (length,) = struct.unpack("<Q", prefix)
            if not 2 <= length <= min(MAX_HEADER_BYTES, os.fstat(handle.fileno()).st_size - 8):
                raise NotSafetensors("bad header length")
            header = json.loads(handle.read(length))
    except (OSError, ValueError) as exc:
        raise NotSafetensors(str(exc)) from exc
    if not isinstance(header, dict):
        raise NotSafetensors("header is not a JSON object")
    metadata = header.get("__metadata__")
    if not isinstance(metadata, dict):
        return {}
    return {str(k): v for k, v in metadata.items() if isinstance(v, str)}


def is_complete(path: Path) -> bool:
    """Whether a .safetensors file holds its whole header and every tensor byte it declares (not cut short).

    A trainer killed while saving (or a full disk) leaves a prefix of the file; ai-toolkit's loader then fails
    with "incomplete metadata, file not fully covered". The header names each tensor's byte range, so the file
    must be exactly 8 + header length + the end of the last range.
    """
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            prefix = handle.read(8)
            if len(prefix) < 8:
                return False
            (length,) = struct.unpack("<Q", prefix)
            if not 2 <= length <= min(MAX_HEADER_BYTES, size - 8):
                return False
            header = json.loads(handle.read(length))
    except (OSError, ValueError):
        return False
    if not isinstance(header, dict):
        return False
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            return False
        end = max(end, offsets[1])
    return bool(size == 8 + length + end)
