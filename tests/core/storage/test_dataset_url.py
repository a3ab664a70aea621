"""`dataset_url`: a dataset zip from an http(s) server or an s3:// object, size-bounded, with the zip checks
of uploads; on the contract and on REST."""

from __future__ import annotations

import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from core.contract.dispatcher import dispatch
from core.jobs.service import JobService
from tests.fakes.trainer import make_dataset
from tests.helpers import make_settings, running_app
from tests.s3server import S3Server


def dataset_zip(tmp_path: Path, *, evil: bool = False) -> bytes:
    source = make_dataset(tmp_path / "zip-src", 2)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path in sorted(source.iterdir()):
            archive.write(path, f"faces/{path.name}")
        if evil:
            archive.writestr("../escape.txt", "out")
    return buffer.getvalue()


class Files:
    """A plain HTTP server on loopback serving fixed bodies by path."""

    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                body = bodies.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def files() -> Iterator[Files]:
    served = Files()
    try:
        yield served
    finally:
        served.server.shutdown()


@pytest.fixture
async def open_service(tmp_path: Path) -> Iterator[JobService]:
    """A service that may fetch from loopback over http (the test server), with a small upload limit."""
    service = JobService(make_settings(tmp_path, dataset_url_allow_private=True, max_upload_bytes=200_000))
    await service.start()
    try:
        yield service  # type: ignore[misc]
    finally:
        await service.close()


async def test_a_zip_from_a_url_is_unpacked_like_an_upload(
    open_service: JobService, files: Files, tmp_path: Path
) -> None:
    files.bodies["/faces.zip"] = dataset_zip(tmp_path)
    out = await dispatch(
        open_service,
        {"type": "upload_training_data", "training_name": "faces", "dataset_url": f"{files.url}/faces.zip"},
    )
    assert out["images"] == 2 and out["captions"] == 2, out
    assert (open_service.workspace.training_data / "faces" / "faces" / "img_0.png").is_file()


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/evil.zip", "evil", "dataset_url: archive refused, nothing unpacked: entry '../escape.txt' climbs out"),
        ("/notes.zip", b"just text", "dataset_url: does not point at a zip archive"),
        ("/huge.zip", b"PK\x03\x04" + b"0" * 300_000, "dataset_url: the archive is larger than the limit of 200000"),
        ("/missing.zip", None, "dataset_url: answered HTTP 404"),
    ],
)
async def test_bad_urls_are_refused_naming_dataset_url_and_write_nothing(
    open_service: JobService, files: Files, tmp_path: Path, path: str, body: object, error: str
) -> None:
    if body == "evil":
        body = dataset_zip(tmp_path, evil=True)
    if isinstance(body, bytes):
        files.bodies[path] = body
    out = await dispatch(
        open_service, {"type": "upload_training_data", "training_name": "faces", "dataset_url": files.url + path}
    )
    assert out["error"].startswith(error), out
    folder = open_service.workspace.training_data / "faces"
    assert not folder.exists() or [p for p in folder.rglob("*") if not p.name.startswith(".")] == []
    assert list((open_service.workspace.root / ".lorapod-downloads").iterdir()) == []


async def test_private_hosts_plain_http_and_other_schemes_are_refused(service: JobService) -> None:
    async def error(url: str) -> str:
        out = await dispatch(service, {"type": "upload_training_data", "training_name": "faces", "dataset_url": url})
        return str(out["error"])

    assert await error("https://127.0.0.1:1/x.zip") == "dataset_url: host '127.0.0.1' is not a public address"
    assert (
        await error("https://169.254.169.254/latest") == "dataset_url: host '169.254.169.254' is not a public address"
    )
    assert (await error("http://example.com/x.zip")).startswith("dataset_url: must be an https:// URL or an s3://")
    assert (await error("file:///etc/passwd")).startswith("dataset_url: must be an https:// URL or an s3://")
    assert await error("s3://b/k.zip") == (
        "dataset_url: s3:// URLs need a bucket configured (BUCKET_ENDPOINT_URL and its keys)"
    )
    both = await dispatch(
        service,
        {
            "type": "upload_training_data",
            "training_name": "faces",
            "dataset_url": "https://example.com/x.zip",
            "files": [{"filename": "a.txt", "content": "YQ=="}],
        },
    )
    assert both == {"error": "files: give either files or dataset_url"}


async def test_an_s3_url_is_read_with_the_buckets_keys_and_published(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.new_bucket()
    s3_server.client().put_object(Bucket=bucket, Key="incoming/faces.zip", Body=dataset_zip(tmp_path))
    service = JobService(make_settings(tmp_path, **s3_server.settings(bucket)))
    await service.start()
    try:
        out = await dispatch(
            service,
            {
                "type": "upload_training_data",
                "training_name": "faces",
                "dataset_url": f"s3://{bucket}/incoming/faces.zip",
            },
        )
        missing = await dispatch(
            service,
            {"type": "upload_training_data", "training_name": "x", "dataset_url": f"s3://{bucket}/incoming/nope.zip"},
        )
    finally:
        await service.close()
    assert out["images"] == 2, out
    assert s3_server.client().head_object(Bucket=bucket, Key="datasets/faces/manifest.json")["ContentLength"] > 0
    assert missing["error"].startswith(f"dataset_url: cannot read s3://{bucket}/incoming/nope.zip")


def test_rest_adds_a_zip_from_a_url(tmp_path: Path, files: Files) -> None:
    files.bodies["/faces.zip"] = dataset_zip(tmp_path)
    settings = make_settings(tmp_path, dataset_url_allow_private=True)
    with running_app(settings) as client:
        ok = client.post("/datasets/faces/url", json={"dataset_url": f"{files.url}/faces.zip"})
        assert ok.status_code == 200 and ok.json()["images"] == 2
        bad = client.post("/datasets/faces/url", json={"dataset_url": "ftp://example.com/x.zip"})
        assert bad.status_code == 422 and bad.json()["field"] == "dataset_url"
        assert client.get("/datasets/faces").json()["images"] == 2
