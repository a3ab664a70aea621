"""A finished download call's chunk kept by reference: its row names the file's bytes, /status reads them again.

A download chunk is up to 10 MB of base64. Kept in the row, every chunk of a 1 GiB file is written to the
database once more (1.3 GiB for a download's 30-minute retention) and costs four more 10 MB copies while it is
written. Kept by reference, the row holds the chunk's place (file, offset, length, the file's size, version and
SHA-256) and /status reads the same bytes again, or answers that the result is gone once the file has changed.
"""

from __future__ import annotations

import stat as stat_mode
from typing import Any

from core.errors import LorapodError, NotFound
from core.storage.files import read_chunk
from core.storage.workspace import Workspace

# The key in a stored output that marks its content as kept by reference: {"mtime_ns": the file's version}.
CONTENT_REF = "content_ref"
_CHUNK_FIELDS = {"file_path": str, "content": str, "offset": int, "length": int, "size": int, "sha256": str}


def stored_output(workspace: Workspace | None, output: Any) -> Any:
    """The output to store: a workspace file's chunk without its base64 but with the file's version; else as is."""
    if workspace is None or not _is_file_chunk(output) or output["length"] == 0:
        return output
    try:
        found = (workspace.root / output["file_path"]).stat()
    except OSError:  # a chunk served from object storage: no file here to read again
        return output
    if not stat_mode.S_ISREG(found.st_mode) or found.st_size != output["size"]:
        return output
    return {**output, "content": None, CONTENT_REF: {"mtime_ns": found.st_mtime_ns}}


def answered_output(workspace: Workspace | None, call_id: str, output: Any) -> Any:
    """The output as /status answers it: a chunk kept by reference read again from its unchanged file.

    NotFound, as for an expired result, when the file has been removed or changed since the call ran.
    """
    if workspace is None or not isinstance(output, dict) or not isinstance(ref := output.get(CONTENT_REF), dict):
        return output
    answer = {key: value for key, value in output.items() if key != CONTENT_REF}
    path, offset, length = answer["file_path"], answer["offset"], answer["length"]
    gone = NotFound(
        f"no request with id '{call_id}' (its result, bytes {offset}-{offset + length} of '{path}', "
        "is gone: the file has changed or been removed since; download it again)",
        field="id",
    )
    try:
        found = (workspace.root / path).stat()
    except OSError:
        raise gone from None
    if found.st_size != answer["size"] or found.st_mtime_ns != ref.get("mtime_ns"):
        raise gone
    try:
        chunk = read_chunk(workspace, path, offset=offset, length=length, max_length=length)
    except LorapodError:
        raise gone from None
    if chunk.sha256 != answer["sha256"] or chunk.length != length:
        raise gone
    return {**answer, "content": chunk.content_b64}


def _is_file_chunk(output: Any) -> bool:
    if not isinstance(output, dict) or "content" not in output:  # most outputs: a health report, a listing
        return False
    values = [(output.get(key), kind) for key, kind in _CHUNK_FIELDS.items()]
    return all(isinstance(value, kind) and not isinstance(value, bool) for value, kind in values)
