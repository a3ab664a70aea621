"""The last hostile-input holes, against a real uvicorn server: deep JSON on /v2, Idempotency-Key reuse, disk full."""

from __future__ import annotations

import base64
import errno
import io
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import core.storage.uploads as uploads
from core.settings import Settings
from tests.fakes.trainer import make_dataset
from tests.helpers import LiveServer, make_settings

TRAIN: dict[str, Any] = {"type": "train", "training_name": "faces", "base_model": "sd15", "steps": 4, "save_every": 2}


@pytest.fixture(autouse=True)
def faces(settings: Settings) -> None:
    make_dataset(Path(settings.workspace) / "training_data" / "faces", 2)


def png(size: int = 16) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (10, 200, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("route", ["run", "runsync"])
@pytest.mark.parametrize("depth", [100, 1000, 100_000])
def test_deeply_nested_json_on_v2_is_a_clear_400(http: httpx.Client, route: str, depth: int) -> None:
    body = '{"input": {"type": "health", "x": ' + "[" * depth + "]" * depth + "}}"
    response = http.post(f"/v2/ep/{route}", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("body: is nested deeper than")
    assert http.post("/v2/ep/runsync", json={"input": {"type": "health"}}).json()["status"] == "COMPLETED"


def test_deeply_nested_json_on_jobs_stays_a_clear_4xx(http: httpx.Client) -> None:
    body = '{"type": "train", "x": ' + "[" * 1000 + "]" * 1000 + "}"
    response = http.post("/jobs", content=body, headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500
    assert "error" in response.json()


def test_idempotency_key_with_another_body_is_refused(http: httpx.Client) -> None:
    first = http.post("/jobs", json=TRAIN, headers={"Idempotency-Key": "k-1"})
    same = http.post("/jobs", json=TRAIN, headers={"Idempotency-Key": "k-1"})
    other = http.post("/jobs", json={**TRAIN, "steps": 6}, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == same.status_code == 202
    assert same.json()["id"] == first.json()["id"]
    assert other.status_code == 422
    assert other.json()["field"] == "Idempotency-Key"
    assert first.json()["id"] in other.json()["error"]
    listed = http.get("/jobs", params={"limit": 500}).json()["data"]
    assert [job["id"] for job in listed] == [first.json()["id"]]


def _raise_enospc_midway(original: Any) -> Any:
    def copy(stream: Any, temp: Path, max_bytes: int, staging: Any) -> Any:
        temp.write_bytes(b"half a file")  # what a write cut short leaves behind
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    return copy


def test_upload_hitting_enospc_keeps_nothing_and_the_server_stays_up(
    http: httpx.Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uploads, "_copy", _raise_enospc_midway(uploads._copy))
    files = [("files", ("a.png", png(), "image/png")), ("files", ("a.txt", b"caption", "text/plain"))]
    response = http.post("/datasets/fresh/files", files=files)
    assert response.status_code == 507, response.text
    assert response.json()["field"] == "files" and "disk is full" in response.json()["error"]
    assert not (Path(settings.workspace) / "training_data" / "fresh").exists()
    existing = Path(settings.workspace) / "training_data" / "faces"
    before = sorted(p.name for p in existing.rglob("*"))
    contract = http.post(
        "/v2/ep/runsync",
        json={
            "input": {
                "type": "upload_training_data",
                "training_name": "faces",
                "files": [{"filename": "b.png", "content": base64.b64encode(png()).decode()}],
            }
        },
    ).json()
    assert contract["status"] == "FAILED" and "disk is full" in contract["error"]
    assert sorted(p.name for p in existing.rglob("*")) == before
    assert http.get("/health").status_code == 200


def test_training_whose_config_write_hits_enospc_fails_clearly_with_its_record(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import core.jobs.runner as runner

    def full(path: Path, text: str, *, durable: bool = True) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(runner, "atomic_write_text", full)
    job = http.post("/jobs", json=TRAIN).json()
    done = http.get(f"/jobs/{job['id']}").json()
    while done["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.05)
        done = http.get(f"/jobs/{job['id']}").json()
    assert done["status"] == "failed"
    assert done["error"].startswith("the disk is full")
    assert done["params"]["steps"] == 4
    assert http.get("/health").status_code == 200


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (root only; skipped where mounting is not allowed)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a size-limited tmpfs needs root")
    mount = tmp_path / "tiny"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_upload_on_a_really_full_filesystem(tmp_path: Path, tiny_filesystem: Path) -> None:
    settings = make_settings(
        tmp_path,
        workspace=tiny_filesystem / "ws",
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",  # the record lives elsewhere, as on a real pod
    )
    server = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            big = os.urandom(3 * 1024 * 1024)  # not an image, but bigger than the whole filesystem
            response = client.post("/datasets/big/files", files=[("files", ("a.png", png() + big, "image/png"))])
            assert response.status_code == 507, response.text
            assert "disk is full" in response.json()["error"]
            assert not (tiny_filesystem / "ws" / "training_data" / "big").exists()
            left = [p for p in (tiny_filesystem / "ws").rglob("*") if p.is_file()]
            assert left == []
            assert client.get("/health").status_code == 200
            small = client.post("/datasets/small/files", files=[("files", ("a.png", png(), "image/png"))])
            assert small.status_code in (200, 201), small.text
    finally:
        server.stop()


def test_a_full_disk_reported_by_sqlite_fails_the_training_clearly(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    from core.jobs.control import JobControl

    def full(self: JobControl) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(JobControl, "reset", full)
    job = http.post("/jobs", json=TRAIN).json()
    done = http.get(f"/jobs/{job['id']}").json()
    while done["status"] not in ("completed", "failed", "cancelled"):
        time.sleep(0.05)
        done = http.get(f"/jobs/{job['id']}").json()
    assert done["status"] == "failed" and done["error"].startswith("the disk is full")
    assert http.get("/health").status_code == 200
