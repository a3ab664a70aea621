"""A call's /runsync or /status answer as the bytes FastAPI writes for it, a download chunk's base64 sent in slices.

A chunk's `content` is up to 10 MB of base64. Encoded whole, the answer costs that again, and more while the
encoder's buffer grows; peak memory is what limits a pod serving downloads. Here the answer is encoded with the
content left out, and the content goes out in slices between the two halves: the same bytes, with the same
Content-Length, and no second copy.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.schemas.encoding import json_encoder
from app.schemas.runpod import CallState

# A /runsync or /status answer as FastAPI writes it for `response_model=CallState, response_model_exclude_unset`.
call_json = json_encoder(CallState, exclude_unset=True)

SLICE_CHARS = 1024 * 1024  # base64 characters per slice sent
_MARK = "lorapod-content-goes-here"


class CallResponse(Response):
    """The JSON of a call view; a large base64 `content` in its output is sent in slices, not copied whole."""

    media_type = "application/json"

    def __init__(self, view: dict[str, Any]) -> None:
        output = view.get("output")
        content = output.get("content") if isinstance(output, dict) else None
        big = isinstance(content, str) and len(content) > SLICE_CHARS and content.isascii()
        if not (isinstance(output, dict) and isinstance(content, str) and big):
            super().__init__(call_json(view))
            self._parts: tuple[bytes, str, bytes] | None = None
            return
        # base64 needs no JSON escapes: the content's JSON is its characters between quotes.
        marked = call_json({**view, "output": {**output, "content": _MARK}})
        head, tail = marked.split(f'"{_MARK}"'.encode(), 1)
        super().__init__(b"")
        self._parts = (head + b'"', content, b'"' + tail)
        self.headers["content-length"] = str(len(head) + len(content) + len(tail) + 2)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the answer: whole, or its head, the content's slices, then its tail."""
        if self._parts is None:
            await super().__call__(scope, receive, send)
            return
        head, content, tail = self._parts
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": head, "more_body": True})
        for start in range(0, len(content), SLICE_CHARS):
            piece = content[start : start + SLICE_CHARS].encode("ascii")
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": tail})
