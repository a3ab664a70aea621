"""Anchor for P4 and P5: a bare Starlette app that streams a request body to a file and serves a file.

`POST /upload` writes the raw request body (the whole multipart body, unparsed) to a new file in
$ANCHOR_DIR; `GET /files/{name}` serves $ANCHOR_DIR/<name> with Starlette's `FileResponse`.
Run: ANCHOR_DIR=/tmp/x python -m uvicorn bench.anchors.bare_transfer:app --port 8001
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

DIRECTORY = Path(os.environ.get("ANCHOR_DIR", ".")).resolve()


async def upload(request: Request) -> JSONResponse:
    """Stream the body to a fresh file and say how many bytes it had."""
    size = 0
    with (DIRECTORY / f"upload-{uuid.uuid4().hex}").open("wb") as sink:
        async for chunk in request.stream():
            sink.write(chunk)
            size += len(chunk)
    return JSONResponse({"bytes": size})


async def download(request: Request) -> FileResponse:
    """One file of the directory."""
    return FileResponse(DIRECTORY / Path(request.path_params["name"]).name)


app = Starlette(routes=[Route("/upload", upload, methods=["POST"]), Route("/files/{name}", download)])
