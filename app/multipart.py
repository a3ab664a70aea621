"""A multipart/form-data body read as it arrives: each file part is a stream handed out while the body still comes in.

Starlette's `request.form()` spools every file to a temporary file before the route sees it, so an upload is
written twice. Here python-multipart (the parser Starlette uses) and the consumer run in one worker thread, which
pulls the body from the event loop in large batches; a file part goes straight to wherever the consumer writes it.
Limits and error answers are those of `request.form()`: 400 for a malformed body, too many parts or a plain field
over 1 MiB. A body that ends before its closing boundary is malformed too (nothing of it is kept).
"""

from __future__ import annotations

import codecs
from collections import deque
from collections.abc import Callable, Iterator

import anyio.from_thread
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.exceptions import HTTPException
from starlette.requests import Request

# Body bytes pulled per hop from the event loop into the worker thread: large, so the hops cost nothing.
PULL_BYTES = 1024 * 1024
MAX_FIELD_BYTES = 1024 * 1024  # a plain (non-file) field, as request.form() allows
MALFORMED = "Invalid multipart data."


def is_multipart(request: Request) -> bool:
    """True when the request says its body is multipart/form-data."""
    media_type, _ = parse_options_header(request.headers.get("content-type", ""))
    return media_type == b"multipart/form-data"


def body_puller(request: Request) -> Callable[[], list[bytes]]:
    """A function for a worker thread: the request body's next chunks, about PULL_BYTES of them ([] at the end)."""
    body = request.stream()

    async def batch() -> list[bytes]:
        chunks: list[bytes] = []
        size = 0
        async for chunk in body:
            if chunk:
                chunks.append(chunk)
                size += len(chunk)
                if size >= PULL_BYTES:
                    break
        return chunks

    return lambda: anyio.from_thread.run(batch)


def _bad(message: str) -> HTTPException:
    return HTTPException(status_code=400, detail=message)


class _Part:
    """One part being parsed: its headers, and for a wanted file its data not read yet."""

    __slots__ = ("disposition", "done", "filename", "kind", "pending", "size")

    def __init__(self) -> None:
        self.disposition = b""
        self.kind = "skip"  # "file" (handed out), "field" (counted, dropped) or "skip" (another field's file)
        self.filename = ""
        self.pending: deque[bytes] = deque()
        self.size = 0
        self.done = False


class FileParts:
    """The file parts named `field` of one multipart body, in order, each as a stream; use from one worker thread."""

    def __init__(
        self, content_type: str, pull: Callable[[], list[bytes]], *, field: str, max_files: int, max_fields: int
    ) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise _bad("Missing boundary in multipart.")
        try:
            self._charset = codecs.lookup(params.get(b"charset", b"utf-8").decode("latin-1")).name
        except LookupError:
            self._charset = "latin-1"
        self._pull = pull
        self._field = field
        self._limits = {"file": max_files, "field": max_fields}
        self._counts = {"file": 0, "field": 0, "skip": 0}
        self._part = _Part()
        self._header = [b"", b""]  # the header being parsed: name, value
        self._ready: deque[_Part] = deque()  # wanted file parts whose headers are complete, not handed out yet
        self._ended = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": lambda data, start, end: self._add_header(0, data[start:end]),
                "on_header_value": lambda data, start, end: self._add_header(1, data[start:end]),
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def __iter__(self) -> Iterator[tuple[str, PartStream]]:
        """(filename, stream) per wanted file part; what a consumer leaves unread is skipped before the next."""
        while True:
            while not self._ready:
                if not self.feed():
                    return
            part = self._ready.popleft()
            stream = PartStream(self, part)
            yield part.filename, stream
            while stream.read(PULL_BYTES):
                pass

    def feed(self) -> bool:
        """Parse the next batch of the body; False once it is over (400 when it ended mid-part)."""
        if self._ended:
            return False
        chunks = self._pull()
        if not chunks:
            raise _bad(MALFORMED)
        try:
            for chunk in chunks:
                self._parser.write(chunk)
        except FormParserError as exc:
            raise _bad(MALFORMED) from exc
        return True

    # ----- python-multipart's callbacks

    def _begin(self) -> None:
        self._part = _Part()

    def _add_header(self, index: int, data: bytes) -> None:
        self._header[index] += data

    def _header_end(self) -> None:
        name, value = self._header
        if name.lower() == b"content-disposition":
            self._part.disposition = value
        self._header = [b"", b""]

    def _headers_finished(self) -> None:
        part = self._part
        _, options = parse_options_header(part.disposition)
        if b"name" not in options:
            raise _bad('The Content-Disposition header field "name" must be provided.')
        kind = "file" if b"filename" in options else "field"
        self._counts[kind] += 1
        if self._counts[kind] > self._limits[kind]:
            what = "files" if kind == "file" else "fields"
            raise _bad(f"Too many {what}. Maximum number of {what} is {self._limits[kind]}.")
        if kind == "field":
            part.kind = "field"
        elif self._decode(options[b"name"]) == self._field:
            part.kind = "file"
            part.filename = self._decode(options[b"filename"])
            self._ready.append(part)

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        if part.kind == "file" and end > start:  # an empty piece would read as the end of the file
            # The whole chunk is the common case for a big file: keep it without copying.
            part.pending.append(data if start == 0 and end == len(data) else data[start:end])
        elif part.kind == "field":
            part.size += end - start
            if part.size > MAX_FIELD_BYTES:
                raise _bad(f"Part exceeded maximum size of {MAX_FIELD_BYTES // 1024}KB.")

    def _part_end(self) -> None:
        self._part.done = True

    def _end(self) -> None:
        self._ended = True

    def _decode(self, value: bytes) -> str:
        try:
            return value.decode(self._charset)
        except UnicodeDecodeError:
            return value.decode("latin-1")


class PartStream:
    """One file part's bytes, read while the body arrives."""

    def __init__(self, parts: FileParts, part: _Part) -> None:
        self._parts = parts
        self._part = part

    def read(self, size: int = -1, /) -> bytes:
        """The part's next bytes (at most size when size ≥ 0); b"" at its end."""
        part = self._part
        while not part.pending:
            if part.done:
                return b""
            if not self._parts.feed():
                raise _bad(MALFORMED)
        block = part.pending.popleft()
        if 0 <= size < len(block):
            part.pending.appendleft(block[size:])
            block = block[:size]
        return block
