"""Browse and download the workspace, only through the core's safe path resolution."""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path as FsPath
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from app.deps import ServiceDep
from app.errors import error_responses
from app.schemas.files import FileList
from core.errors import InvalidInput, NotFound
from core.storage.files import KINDS, file_sha256, list_files

router = APIRouter(tags=["files"])

# Types Python's mimetypes does not know, or guesses differently across platforms.
_CONTENT_TYPES = {
    ".safetensors": "application/octet-stream",
    ".ckpt": "application/octet-stream",
    ".pt": "application/octet-stream",
    ".yaml": "text/yaml; charset=utf-8",
    ".yml": "text/yaml; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
    ".caption": "text/plain; charset=utf-8",
    ".json": "application/json",
    ".webp": "image/webp",
}

DOWNLOAD_CHUNK_BYTES = 1024 * 1024
_DOWNLOAD_HEADERS: dict[str, Any] = {
    "Accept-Ranges": {
        "description": "Always `bytes`: send `Range: bytes=a-b` for part of the file (206).",
        "schema": {"type": "string"},
    },
    "ETag": {
        "description": "Changes when the file changes; send it back in `If-None-Match` (304).",
        "schema": {"type": "string"},
    },
}
DOWNLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes, with its content type, `ETag`, `Last-Modified` and `Accept-Ranges`.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "headers": _DOWNLOAD_HEADERS,
    },
    206: {
        "description": "The requested byte range (`Content-Range` says which).",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    304: {"description": "Not modified: the `If-None-Match` ETag still matches."},
    416: {"description": "The `Range` lies outside the file."},
}


def content_type_of(path: FsPath) -> str:
    """The content type a download is served with, by its suffix."""
    suffix = path.suffix.lower()
    return _CONTENT_TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def file_response(request: Request, path: FsPath, *, field: str = "path") -> Response:
    """Serve one file with Range, ETag and If-None-Match support; NotFound when it is not a regular file."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise NotFound(f"{field}: no such file", field=field) from None
    if not path.is_file():
        raise InvalidInput(field, "is a folder, not a file")
    media_type = content_type_of(path)
    inline = media_type.startswith(("image/", "text/"))
    response = FileResponse(
        path,
        media_type=media_type,
        filename=path.name,
        stat_result=stat,
        content_disposition_type="inline" if inline else "attachment",
    )
    # Starlette reads 64 KiB per hop into a worker thread; 1 MiB hops serve a 1 GiB LoRA about a quarter faster.
    response.chunk_size = DOWNLOAD_CHUNK_BYTES
    etag = response.headers.get("etag")
    if etag and etag in _etags(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": "no-cache"})
    response.headers["Cache-Control"] = "no-cache"
    if "sha-256" in request.headers.get("want-repr-digest", ""):
        # RFC 9530: the whole file's digest, also on a 206, so a resumed download can be verified. Only on
        # request, because hashing a large file the first time costs a full read.
        digest = bytes.fromhex(file_sha256(path, stat))
        response.headers["Repr-Digest"] = f"sha-256=:{base64.b64encode(digest).decode()}:"
    return response


def _etags(header: str) -> set[str]:
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


@router.get(
    "/files",
    summary="List workspace files",
    description=(
        "Files under the workspace, or under one of its folders with `directory` (relative to the workspace, "
        "or absolute under it, e.g. `output/train_ab12cd34ef56`). Hidden files, the database and links "
        "pointing outside the workspace are never listed. Filter by a file-name glob (`pattern=*.safetensors`) "
        "and by kind (`kind=image&kind=model`)."
    ),
    response_model=FileList,
    responses={
        200: {"description": "The files, sorted by path."},
        **error_responses(401, 404, 422, fields=("directory", "pattern", "kind", "limit")),
    },
)
async def get_files(
    service: ServiceDep,
    directory: Annotated[
        str | None, Query(max_length=1024, description="A folder of the workspace; default the whole workspace.")
    ] = None,
    pattern: Annotated[
        str | None, Query(max_length=255, description="A file-name glob such as `*.png` (case-insensitive).")
    ] = None,
    kind: Annotated[list[str] | None, Query(description=f"Only these kinds: {', '.join(sorted(KINDS))}.")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000, description="At most this many files.")] = 1000,
) -> dict[str, Any]:
    """List workspace files."""
    found = await run_in_threadpool(
        list_files, service.workspace, directory, pattern, kinds=set(kind) if kind else None, limit=limit
    )
    return {"data": [{**info.to_dict(), "url": f"/files/{info.path}"} for info in found]}


@router.get(
    "/files/{path:path}",
    summary="Download a workspace file",
    description=(
        "One file of the workspace, given relative to it (or absolute under it). The path is resolved with "
        "links followed and must stay inside the workspace: `..`, encoded separators and links pointing out "
        "are refused with 422. Supports `Range` (206) and `If-None-Match` (304)."
    ),
    response_class=Response,
    responses={**DOWNLOAD_RESPONSES, **error_responses(401, 404, 422, fields=("path",))},
)
async def download_file(
    request: Request,
    service: ServiceDep,
    path: Annotated[str, Path(max_length=4096, description="Workspace-relative path of the file.")],
) -> Response:
    """Download a workspace file."""
    target = service.workspace.resolve(path, field="path")
    # What the listing hides (hidden names, the server's own database) is not served either.
    if target != service.workspace.root and service.workspace.is_private(target):
        raise NotFound("path: no such file", field="path")
    return file_response(request, target, field="path")
