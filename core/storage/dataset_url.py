"""`dataset_url`: a dataset zip fetched from an https URL or an s3:// object, size-bounded, then unpacked
through the same checks as an uploaded zip (core.storage.uploads).

An https URL must name a public host: loopback, private, link-local and other non-global addresses are
refused (the worker's metadata endpoints and neighbours are not the caller's to read), unless
LORAPOD_DATASET_URL_ALLOW_PRIVATE is set, which also allows plain http. An s3:// URL is read with the
configured bucket's credentials.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote, urljoin, urlsplit

from core.errors import InvalidInput, TooLarge
from core.storage.datasets import DatasetStore, UploadSummary, validate_name
from core.storage.objects import ObjectStore

FIELD = "dataset_url"
_MAX_REDIRECTS = 3
_CHUNK = 1024 * 1024


def save_from_url(
    datasets: DatasetStore, name: str, url: str, *, objects: ObjectStore | None, allow_private: bool
) -> UploadSummary:
    """Fetch the zip at url and add its files to the dataset, as an uploaded zip would be."""
    validate_name(name)
    folder = datasets.workspace.root / ".lorapod-downloads"
    archive_name = PurePosixPath(urlsplit(url).path).name if isinstance(url, str) else ""
    archive_name = archive_name if archive_name.lower().endswith(".zip") else "dataset.zip"
    with (
        fetched_zip(
            url, folder=folder, max_bytes=datasets.max_upload_bytes, objects=objects, allow_private=allow_private
        ) as path,
        path.open("rb") as handle,
    ):
        summary = datasets.save_files(name, [(archive_name, handle)])
    refused = [s for s in summary.skipped if s.get("filename") == archive_name and "archive" in s.get("reason", "")]
    if refused and not summary.saved:
        raise InvalidInput(FIELD, refused[0]["reason"])
    return summary


@contextlib.contextmanager
def fetched_zip(
    url: str, *, folder: Path, max_bytes: int, objects: ObjectStore | None, allow_private: bool
) -> Iterator[Path]:
    """The zip at url in a temporary file under folder (removed after use); errors name dataset_url."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(FIELD, "is required")
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=".lorapod-url-", suffix=".part")
    temp = Path(name)
    try:
        with open(fd, "wb") as sink:
            scheme = urlsplit(url).scheme.lower()
            if scheme == "s3":
                _from_s3(url, sink, max_bytes, objects)
            elif scheme == "https" or (scheme == "http" and allow_private):
                _from_http(url, sink, max_bytes, allow_private)
            else:
                raise InvalidInput(FIELD, "must be an https:// URL or an s3://bucket/key of a zip archive")
        with temp.open("rb") as handle:
            if handle.read(4) != b"PK\x03\x04":
                raise InvalidInput(FIELD, "does not point at a zip archive")
        yield temp
    finally:
        temp.unlink(missing_ok=True)


def _from_s3(url: str, sink: BinaryIO, max_bytes: int, objects: ObjectStore | None) -> None:
    if objects is None:
        raise InvalidInput(FIELD, "s3:// URLs need a bucket configured (BUCKET_ENDPOINT_URL and its keys)")
    parts = urlsplit(url)
    bucket, key = parts.netloc, unquote(parts.path.lstrip("/"))
    if not bucket or not key:
        raise InvalidInput(FIELD, "must be s3://<bucket>/<key>")
    try:
        head = objects.client.head_object(Bucket=bucket, Key=key)
    except Exception as exc:
        raise InvalidInput(FIELD, f"cannot read s3://{bucket}/{key}: {_reason(exc)}") from None
    if int(head.get("ContentLength", 0)) > max_bytes:
        raise _too_large(max_bytes)
    try:
        body = objects.client.get_object(Bucket=bucket, Key=key)["Body"]
        _copy(iter(lambda: body.read(_CHUNK), b""), sink, max_bytes)
    except (InvalidInput, TooLarge):
        raise
    except Exception as exc:
        raise InvalidInput(FIELD, f"cannot read s3://{bucket}/{key}: {_reason(exc)}") from None


def _from_http(url: str, sink: BinaryIO, max_bytes: int, allow_private: bool) -> None:
    import httpx

    with httpx.Client(timeout=httpx.Timeout(30.0, read=120.0), follow_redirects=False) as client:
        for _ in range(_MAX_REDIRECTS + 1):
            _check_host(url, allow_private)
            try:
                with client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        if urlsplit(url).scheme != "https" and not allow_private:
                            raise InvalidInput(FIELD, "redirects to a URL that is not https")
                        continue
                    if response.status_code != 200:
                        raise InvalidInput(FIELD, f"answered HTTP {response.status_code}")
                    declared = response.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > max_bytes:
                        raise TooLarge(
                            f"{FIELD}: the archive is larger than the limit of {max_bytes} bytes", field=FIELD
                        )
                    _copy(response.iter_bytes(_CHUNK), sink, max_bytes)
                    return
            except httpx.HTTPError as exc:
                raise InvalidInput(FIELD, f"could not be fetched: {type(exc).__name__}") from None
    raise InvalidInput(FIELD, f"redirects more than {_MAX_REDIRECTS} times")


def _check_host(url: str, allow_private: bool) -> None:
    """Refuse hosts that resolve to non-global addresses (unless allowed)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise InvalidInput(FIELD, "has no host")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port or 443, type=socket.SOCK_STREAM)
    except OSError:
        raise InvalidInput(FIELD, f"host '{parts.hostname}' does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise InvalidInput(FIELD, f"host '{parts.hostname}' is not a public address")


def _copy(blocks: Iterable[bytes], sink: BinaryIO, max_bytes: int) -> None:
    written = 0
    for block in blocks:
        written += len(block)
        if written > max_bytes:
            raise _too_large(max_bytes)
        sink.write(block)


def _reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error", {})
        return f"{error.get('Code', '')} {error.get('Message', '')}".strip() or type(exc).__name__
    return type(exc).__name__


def _too_large(max_bytes: int) -> TooLarge:
    return TooLarge(f"{FIELD}: the archive is larger than the limit of {max_bytes} bytes", field=FIELD)
