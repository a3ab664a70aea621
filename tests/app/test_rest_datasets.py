"""REST /datasets: uploads of real images, captions and zips; files that lie; zip slip and links; limits."""

from __future__ import annotations

import io
import socket
import stat
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.settings import Settings
from tests.helpers import LiveServer, make_settings, running_app


def png(color: tuple[int, int, int] = (10, 20, 30), size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(color: tuple[int, int, int] = (200, 20, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buffer, "JPEG")
    return buffer.getvalue()


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buffer, "GIF")
    return buffer.getvalue()


def zipped(entries: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return buffer.getvalue()


def folder(settings: Settings, name: str) -> Path:
    return Path(settings.workspace).resolve() / "training_data" / name


def upload(client: TestClient, name: str, files: list[tuple[str, bytes]]) -> httpx.Response:
    return client.post(f"/datasets/{name}/files", files=[("files", (fn, data)) for fn, data in files])


def test_upload_real_images_and_captions(client: TestClient, settings: Settings) -> None:
    response = upload(
        client, "faces", [("a.png", png()), ("a.txt", b"a photo of sks"), ("b.jpg", jpeg()), ("c.jpeg", jpeg())]
    )
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["dataset"] == "faces"
    assert sorted(summary["saved"]) == ["a.png", "a.txt", "b.jpg", "c.jpeg"]
    assert summary["images"] == 3 and summary["captions"] == 1
    assert sorted(summary["images_without_caption"]) == ["b.jpg", "c.jpeg"]
    assert (folder(settings, "faces") / "a.png").read_bytes() == png()
    assert (folder(settings, "faces") / "a.txt").read_text() == "a photo of sks"


def test_files_that_lie_about_their_type(client: TestClient, settings: Settings) -> None:
    response = upload(
        client,
        "liars",
        [
            ("fake.png", b"this is not a png at all"),
            ("photo.png", jpeg()),
            ("anim.gif", gif()),
            ("script.sh", b"#!/bin/sh\nrm -rf /\n"),
            ("real.png", png()),
        ],
    )
    summary = response.json()
    assert response.status_code == 200
    assert sorted(summary["saved"]) == ["photo.jpg", "real.png"]
    reasons = {s["filename"]: s["reason"] for s in summary["skipped"]}
    assert "not an image" in reasons["fake.png"]
    assert "GIF" in reasons["anim.gif"]
    assert "unsupported file" in reasons["script.sh"]
    assert summary["renamed"] == [{"from": "photo.png", "to": "photo.jpg", "reason": "content is JPEG"}]
    on_disk = sorted(p.name for p in folder(settings, "liars").iterdir() if not p.name.startswith("."))
    assert on_disk == ["photo.jpg", "real.png"]
    details = client.get("/datasets/liars").json()
    assert {s["filename"] for s in details["skipped"]} == {"fake.png", "anim.gif", "script.sh"}


def test_zip_is_unpacked_with_subfolders(client: TestClient, settings: Settings) -> None:
    archive = zipped({"set/x.png": png(), "set/x.txt": b"caption x", "y.jpg": jpeg(), "__MACOSX/._y.jpg": b"junk"})
    summary = upload(client, "zipped", [("bundle.zip", archive)]).json()
    assert sorted(summary["saved"]) == ["set/x.png", "set/x.txt", "y.jpg"]
    assert summary["images"] == 2 and summary["captions"] == 1
    assert (folder(settings, "zipped") / "set" / "x.png").read_bytes() == png()


@pytest.mark.parametrize(
    ("entries", "links", "reason"),
    [
        ({"ok.png": png(), "../escaped.png": png()}, None, "climbs out"),
        ({"ok.png": png(), "/tmp/absolute.png": png()}, None, "absolute path"),
        ({"ok.png": png()}, {"link.png": "/etc/passwd"}, "symbolic link"),
        ({"ok.png": png()}, {"sub/up.png": "../../../../etc/hosts"}, "symbolic link"),
    ],
)
def test_hostile_zips_are_refused_whole(
    client: TestClient, settings: Settings, entries: dict[str, bytes], links: dict[str, str] | None, reason: str
) -> None:
    response = upload(client, "hostile", [("evil.zip", zipped(entries, links)), ("keep.png", png())])
    assert response.status_code == 200
    summary = response.json()
    assert summary["saved"] == ["keep.png"]  # nothing from the archive, not even its good entries
    assert len(summary["skipped"]) == 1 and summary["skipped"][0]["filename"] == "evil.zip"
    assert reason in summary["skipped"][0]["reason"]
    workspace = Path(settings.workspace).resolve()
    assert not list(workspace.rglob("escaped.png")) and not list(workspace.rglob("absolute.png"))
    assert sorted(p.name for p in folder(settings, "hostile").iterdir() if not p.name.startswith(".")) == ["keep.png"]


def test_zip_with_too_many_entries_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_zip_entries=3)
    with running_app(settings) as client:
        archive = zipped({f"{i}.png": png() for i in range(5)})
        summary = upload(client, "many", [("many.zip", archive)]).json()
        assert summary["saved"] == []
        assert "more than the limit of 3" in summary["skipped"][0]["reason"]


def test_upload_over_the_request_limit_is_413_and_keeps_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_upload_bytes=20_000)
    with running_app(settings) as client:
        assert upload(client, "big", [("small.png", png())]).status_code == 200
        noise = png(size=128) + b"\x00" * 30_000
        response = upload(client, "big", [("huge.png", noise)])
        assert response.status_code == 413
        assert response.json()["field"] == "files"
        assert "limit of 20000 bytes" in response.json()["error"]
        # Without Content-Length (chunked), the streamed bytes are counted instead.
        request = httpx.Request("POST", "http://x/", files=[("files", ("huge2.png", noise))])
        body = request.read()

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 4096):
                yield body[start : start + 4096]

        response = client.post(
            "/datasets/big/files", content=chunks(), headers={"content-type": request.headers["content-type"]}
        )
        assert response.status_code == 413
        names = sorted(p.name for p in folder(settings, "big").iterdir() if not p.name.startswith("."))
        assert names == ["small.png"]


def test_file_over_the_per_file_limit_is_skipped(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_file_bytes=2_000)
    with running_app(settings) as client:
        big = png(size=128) + b"\x00" * 5_000
        summary = upload(client, "files", [("big.png", big), ("ok.png", png())]).json()
        assert summary["saved"] == ["ok.png"]
        assert "per-file limit of 2000 bytes" in summary["skipped"][0]["reason"]


def test_list_get_and_delete(client: TestClient, settings: Settings) -> None:
    upload(client, "one", [("a.png", png()), ("a.txt", b"cap")])
    upload(client, "two", [("b.png", png())])
    listed = client.get("/datasets").json()["data"]
    assert [d["name"] for d in listed] == ["one", "two"]
    assert listed[0]["images"] == 1 and listed[0]["captions"] == 1 and "files" not in listed[0]
    details = client.get("/datasets/one").json()
    assert {f["path"] for f in details["files"]} == {"a.png", "a.txt"}
    assert details["size_bytes"] == len(png()) + 3
    assert client.delete("/datasets/one/files/a.txt").status_code == 204
    assert client.get("/datasets/one").json()["images_without_caption"] == ["a.png"]
    assert client.delete("/datasets/one/files/a.txt").status_code == 404
    assert client.delete("/datasets/one").status_code == 204
    assert not folder(settings, "one").exists()
    assert client.get("/datasets/one").status_code == 404
    assert [d["name"] for d in client.get("/datasets").json()["data"]] == ["two"]


def test_bad_names_and_paths(client: TestClient, settings: Settings) -> None:
    upload(client, "safe", [("a.png", png())])
    (Path(settings.workspace).resolve() / "outside.txt").write_text("keep me")
    for method, path in [
        ("POST", "/datasets/.hidden/files"),
        ("POST", "/datasets/bad%20name/files"),
        ("GET", "/datasets/-dash"),
        ("DELETE", "/datasets/safe/files/%2e%2e/%2e%2e/outside.txt"),
        ("DELETE", "/datasets/safe/files//etc/passwd"),
    ]:
        response = client.request(method, path, files=[("files", ("a.png", png()))] if method == "POST" else None)
        assert response.status_code == 422, (path, response.text)
        assert response.json()["field"] in {"name", "path"}  # the route's parameters, not the contract's training_name
    assert (Path(settings.workspace).resolve() / "outside.txt").read_text() == "keep me"


def test_upload_without_files_is_422(client: TestClient) -> None:
    response = client.post("/datasets/empty/files", data={"other": "x"})
    assert response.status_code == 422 and response.json()["field"] == "files"
    response = client.post("/datasets/empty/files", json={"files": []})
    assert response.status_code == 422 and response.json()["field"] == "files"


def staging_debris(settings: Settings) -> list[Path]:
    return list((Path(settings.workspace).resolve() / "training_data").rglob(".lorapod-staging-*"))


def test_many_files_and_fields_in_one_body(client: TestClient, settings: Settings) -> None:
    photos = {f"p{i}.png": png((i, 2 * i, 3 * i), size=64) for i in range(30)}
    files = [("files", (name, data)) for name, data in photos.items()] + [("other", ("x.png", png()))]
    response = client.post("/datasets/many/files", files=files, data={"note": "not a file", "files": "nor this"})
    assert response.status_code == 200, response.text
    assert sorted(response.json()["saved"]) == sorted(photos)
    for name, data in photos.items():
        assert (folder(settings, "many") / name).read_bytes() == data
    assert not (folder(settings, "many") / "x.png").exists()  # another field's file is not the dataset's


def test_a_fresh_dataset_over_the_limit_mid_stream_leaves_nothing(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_upload_bytes=3_000_000)
    server = LiveServer(settings).start()
    try:
        request = httpx.Request(
            "POST",
            "http://x/",
            files=[("files", ("ok.png", png() + bytes(2_000_000))), ("files", ("huge.png", png() + bytes(2_000_000)))],
        )
        data = request.read()
        chunks = (data[start : start + 65536] for start in range(0, len(data), 65536))  # no Content-Length
        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.post(
                "/datasets/fresh/files", content=chunks, headers={"content-type": request.headers["content-type"]}
            )
            assert response.status_code == 413
            assert not folder(settings, "fresh").exists()
            assert client.get("/datasets").json()["data"] == []
    finally:
        server.stop()


def test_a_body_cut_off_before_its_end_is_400_and_keeps_nothing(client: TestClient, settings: Settings) -> None:
    request = httpx.Request("POST", "http://x/", files=[("files", ("a.png", png())), ("files", ("b.png", png()))])
    cut = request.read()[:-40]
    response = client.post(
        "/datasets/cut/files", content=cut, headers={"content-type": request.headers["content-type"]}
    )
    assert response.status_code == 400
    assert response.json()["error"] == "Invalid multipart data."
    assert not folder(settings, "cut").exists()


def test_names_that_climb_or_hide_stay_inside_the_dataset(client: TestClient, settings: Settings) -> None:
    response = upload(
        client, "names", [("../../escape.png", png()), (".hidden.png", png()), ("..", png()), ("   ", png())]
    )
    assert response.status_code == 200, response.text
    summary = response.json()
    assert summary["saved"] == ["escape.png"]
    assert len(summary["skipped"]) == 3
    assert not (Path(settings.workspace).resolve() / "escape.png").exists()
    assert (folder(settings, "names") / "escape.png").read_bytes() == png()


def test_a_client_that_goes_away_mid_upload_leaves_nothing(live_server: LiveServer, settings: Settings) -> None:
    prefix = b'--B\r\nContent-Disposition: form-data; name="files"; filename="a.png"\r\n\r\n' + png()
    with socket.create_connection(("127.0.0.1", live_server.port)) as sock:
        sock.sendall(
            b"POST /datasets/gone/files HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=B\r\n"
            b"Content-Length: 50000000\r\n\r\n" + prefix + bytes(2_000_000)
        )
        deadline = time.monotonic() + 20
        while not staging_debris(settings):  # the file is being written into staging now
            assert time.monotonic() < deadline, "the upload never reached staging"
            time.sleep(0.02)
    deadline = time.monotonic() + 20
    while folder(settings, "gone").exists():
        assert time.monotonic() < deadline, f"left behind: {list(folder(settings, 'gone').rglob('*'))}"
        time.sleep(0.02)
    assert staging_debris(settings) == []
