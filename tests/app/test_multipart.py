"""app/multipart.py: file parts read as the body arrives, byte-identical whatever the chunking; form() limits."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import pytest
from starlette.exceptions import HTTPException

from app.multipart import MAX_FIELD_BYTES, FileParts

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def body(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    """A multipart body: (field name, filename or None for a plain field, content) per part."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def puller(data: bytes, chunk: int) -> Callable[[], list[bytes]]:
    """A pull function handing data out in pieces of chunk bytes, two pieces per pull."""
    pieces = [data[i : i + chunk] for i in range(0, len(data), chunk)]

    def pull() -> list[bytes]:
        taken = pieces[:2]
        del pieces[:2]
        return taken

    return pull


def read_all(data: bytes, chunk: int, *, read_size: int = -1, content_type: str = CONTENT_TYPE) -> dict[str, bytes]:
    parts = FileParts(content_type, puller(data, chunk), field="files", max_files=10, max_fields=10)
    found: dict[str, bytes] = {}
    for filename, stream in parts:
        found[filename] = b"".join(iter(lambda s=stream: s.read(read_size), b""))  # type: ignore[misc]
    return found


# Content that looks like a boundary without being one, and bytes across every chunk edge.
TRICKY = b"\r\n--b0undar\r\n--b0undaryX" + os.urandom(5000) + b"\r\n-"


@pytest.mark.parametrize("chunk", [1, 7, 64, 4096, 1 << 20])
@pytest.mark.parametrize("read_size", [-1, 3, 1 << 20])
def test_file_parts_are_byte_identical_whatever_the_chunking(chunk: int, read_size: int) -> None:
    data = body(
        [
            ("note", None, b"a plain field"),
            ("files", "a.png", TRICKY),
            ("other", "ignored.png", b"another field's file"),
            ("files", "a.txt", b"caption"),
            ("files", "empty.txt", b""),
        ]
    )
    assert read_all(data, chunk, read_size=read_size) == {"a.png": TRICKY, "a.txt": b"caption", "empty.txt": b""}


def test_a_part_left_unread_is_skipped_before_the_next() -> None:
    data = body([("files", "first.bin", os.urandom(300_000)), ("files", "second.txt", b"second")])
    parts = FileParts(CONTENT_TYPE, puller(data, 1000), field="files", max_files=10, max_fields=10)
    seen = []
    for filename, stream in parts:
        seen.append((filename, stream.read(10) if filename == "first.bin" else stream.read()))
    assert seen[1] == ("second.txt", b"second")
    assert len(seen[0][1]) == 10


def test_names_are_decoded_as_utf8() -> None:
    data = body([("files", "zdjęcie.png", b"x")])
    assert list(read_all(data, 50)) == ["zdjęcie.png"]


def test_an_httpx_body_is_read_like_request_form_reads_it() -> None:
    request = httpx.Request("POST", "http://x/", files=[("files", ("a.png", b"\x89PNG data")), ("files", ("b", b""))])
    data = request.read()
    assert read_all(data, 13, content_type=request.headers["content-type"]) == {"a.png": b"\x89PNG data", "b": b""}


def _error(data: bytes, *, content_type: str = CONTENT_TYPE, max_files: int = 10, max_fields: int = 10) -> str:
    with pytest.raises(HTTPException) as caught:
        parts = FileParts(content_type, puller(data, 100), field="files", max_files=max_files, max_fields=max_fields)
        for _, stream in parts:
            while stream.read():
                pass
    assert caught.value.status_code == 400
    return str(caught.value.detail)


def test_a_body_cut_off_before_its_closing_boundary_is_malformed() -> None:
    data = body([("files", "a.png", b"x" * 1000)])
    assert _error(data[:-30]) == "Invalid multipart data."  # inside the last part
    assert _error(data[: -len(f"--{BOUNDARY}--\r\n")]) == "Invalid multipart data."  # right before the end


def test_request_form_limits_and_errors() -> None:
    three_files = body([("files", f"{i}.png", b"x") for i in range(3)])
    assert _error(three_files, max_files=2) == "Too many files. Maximum number of files is 2."
    three_fields = body([(f"f{i}", None, b"x") for i in range(3)])
    assert _error(three_fields, max_fields=2) == "Too many fields. Maximum number of fields is 2."
    big_field = body([("note", None, b"x" * (MAX_FIELD_BYTES + 1))])
    assert _error(big_field) == "Part exceeded maximum size of 1024KB."
    assert _error(b"", content_type="multipart/form-data") == "Missing boundary in multipart."
    no_name = f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n--{BOUNDARY}--\r\n".encode()
    assert _error(no_name) == 'The Content-Disposition header field "name" must be provided.'
    assert _error(b"this is not multipart at all") == "Invalid multipart data."
