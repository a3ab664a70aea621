"""REST /files and /models: browsing and downloading the workspace safely, and the model catalog."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.routes.files import DOWNLOAD_CHUNK_BYTES
from core.settings import Settings


@pytest.fixture
def workspace(client: TestClient, settings: Settings) -> Path:
    """The started app's workspace with a few files in it."""
    root = Path(settings.workspace).resolve()
    (root / "output" / "train_aaaaaaaaaaaa" / "lora").mkdir(parents=True)
    (root / "output" / "train_aaaaaaaaaaaa" / "lora" / "notes.txt").write_text("hello workspace\n")
    (root / "training_data" / "set").mkdir(parents=True)
    (root / "training_data" / "set" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (root / "training_data" / "set" / ".hidden").write_text("secret-ish")
    return root


def safetensors(step: int | None) -> bytes:
    """A minimal .safetensors file: an 8-byte header length, a JSON header with metadata, no tensors."""
    metadata = {"training_info": json.dumps({"step": step})} if step is not None else {}
    header = json.dumps({"__metadata__": metadata}).encode()
    return struct.pack("<Q", len(header)) + header


def test_list_files_whole_workspace_and_one_folder(client: TestClient, workspace: Path) -> None:
    paths = [f["path"] for f in client.get("/files").json()["data"]]
    assert "output/train_aaaaaaaaaaaa/lora/notes.txt" in paths and "training_data/set/a.png" in paths
    assert not any(p.endswith((".db", ".db-wal", ".hidden")) for p in paths)  # database and hidden files stay out
    only = client.get("/files", params={"directory": "training_data/set"}).json()["data"]
    assert [f["path"] for f in only] == ["training_data/set/a.png"]
    assert only[0]["kind"] == "image" and only[0]["url"] == "/files/training_data/set/a.png"
    assert only[0]["size"] == (workspace / "training_data/set/a.png").stat().st_size
    globbed = client.get("/files", params={"pattern": "*.TXT"}).json()["data"]
    assert [f["path"] for f in globbed] == ["output/train_aaaaaaaaaaaa/lora/notes.txt"]
    kinds = client.get("/files", params=[("kind", "image")]).json()["data"]
    assert {f["kind"] for f in kinds} == {"image"}


def test_download_with_range_and_etag(client: TestClient, workspace: Path) -> None:
    data = (workspace / "training_data/set/a.png").read_bytes()
    response = client.get("/files/training_data/set/a.png")
    assert response.status_code == 200 and response.content == data
    assert response.headers["content-type"] == "image/png"
    part = client.get("/files/training_data/set/a.png", headers={"Range": "bytes=-16"})
    assert part.status_code == 206 and part.content == data[-16:]
    assert part.headers["content-range"] == f"bytes {len(data) - 16}-{len(data) - 1}/{len(data)}"
    assert client.get("/files/training_data/set/a.png", headers={"Range": "bytes=99999-"}).status_code == 416
    etag = response.headers["etag"]
    assert client.get("/files/training_data/set/a.png", headers={"If-None-Match": etag}).status_code == 304
    (workspace / "training_data/set/a.png").write_bytes(data + b"more")
    assert client.get("/files/training_data/set/a.png", headers={"If-None-Match": etag}).status_code == 200
    # Absolute paths under the workspace are accepted too.
    assert client.get(f"/files/{workspace}/training_data/set/a.png").status_code == 200  # //abs/path


def test_missing_folder_and_hidden_files(client: TestClient, workspace: Path) -> None:
    assert client.get("/files/output/nothing.bin").status_code == 404
    assert client.get("/files/training_data/set/.hidden").status_code == 404
    assert client.get("/files/lorapod.db").status_code == 404
    staging = workspace / "training_data" / "set" / ".lorapod-staging-1"
    staging.mkdir()
    (staging / "b.png").write_bytes(b"half-written")
    assert client.get("/files/training_data/set/.lorapod-staging-1/b.png").status_code == 404
    folder = client.get("/files/training_data/set")
    assert folder.status_code == 422 and folder.json()["field"] == "path"
    missing = client.get("/files", params={"directory": "no/such/folder"})
    assert missing.status_code == 404 and missing.json()["field"] == "directory"


@pytest.mark.parametrize(
    "path",
    [
        "/files/%2e%2e/%2e%2e/etc/passwd",
        "/files/training_data/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/files/%252e%252e/etc/passwd",
        "/files/..%5c..%5cetc%5cpasswd",
        "/files//etc/passwd",
        "/files/~/.ssh/id_rsa",
        "/files/a%00b",
    ],
)
def test_path_escapes_are_refused(client: TestClient, workspace: Path, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == "path"
    assert "root:" not in response.text


def test_symlink_out_of_the_workspace_is_refused(client: TestClient, workspace: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    os.symlink(outside, workspace / "output" / "escape")
    os.symlink(outside / "secret.txt", workspace / "output" / "secret_link.txt")
    for path in ["/files/output/escape/secret.txt", "/files/output/secret_link.txt"]:
        response = client.get(path)
        assert response.status_code == 422 and "not yours" not in response.text
    listing = client.get("/files", params={"directory": "output"}).json()["data"]
    assert not any("secret" in f["path"] for f in listing)
    assert client.get("/files", params={"directory": "output/escape"}).status_code == 422


def test_directory_escape_in_listing_is_refused(client: TestClient, workspace: Path) -> None:
    for directory in ["..", "../..", "/etc", "training_data/../../"]:
        response = client.get("/files", params={"directory": directory})
        assert response.status_code == 422, directory
        assert response.json()["field"] == "directory"


def test_overlong_names_are_422_not_500(client: TestClient, workspace: Path) -> None:
    assert client.get("/files/" + "a" * 300).status_code == 422
    assert client.get("/files", params={"directory": "b" * 300}).status_code == 422


def test_models_lists_loras_and_base_models(client: TestClient, settings: Settings) -> None:
    root = Path(settings.workspace).resolve()
    job_dir = root / "output" / "train_0123456789ab" / "my_lora"
    job_dir.mkdir(parents=True)
    (job_dir / "my_lora_000000005.safetensors").write_bytes(safetensors(5))
    (job_dir / "my_lora.safetensors").write_bytes(safetensors(10))
    diffusers = root / "models" / "tiny-sd"
    diffusers.mkdir(parents=True)
    (diffusers / "model_index.json").write_text("{}")
    (root / "models" / "single.safetensors").write_bytes(safetensors(None))
    cached = root / "models" / "huggingface" / "hub" / "models--org--base" / "snapshots" / "abc123"
    cached.mkdir(parents=True)
    (cached / "model_index.json").write_text("{}")
    body = client.get("/models").json()
    loras = {lora["name"]: lora for lora in body["loras"]}
    assert set(loras) == {"my_lora_000000005.safetensors", "my_lora.safetensors"}
    assert loras["my_lora_000000005.safetensors"]["step"] == 5 and not loras["my_lora_000000005.safetensors"]["final"]
    assert loras["my_lora.safetensors"]["final"] and loras["my_lora.safetensors"]["process_id"] == "train_0123456789ab"
    final = loras["my_lora.safetensors"]
    assert final["size"] == len(safetensors(10))
    assert client.get(final["url"]).content == safetensors(10)
    bases = {(m["name"], m["source"], m["format"]) for m in body["base_models"]}
    assert bases == {
        ("tiny-sd", "local", "diffusers"),
        ("single.safetensors", "local", "single_file"),
        ("org/base", "hf_cache", "diffusers"),
    }


def test_models_on_an_empty_workspace(client: TestClient) -> None:
    assert client.get("/models").json() == {"loras": [], "base_models": []}


def test_a_file_of_many_read_chunks_downloads_byte_identical(client: TestClient, workspace: Path) -> None:
    data = os.urandom(3 * DOWNLOAD_CHUNK_BYTES + 123)
    (workspace / "output" / "big.safetensors").write_bytes(data)
    whole = client.get("/files/output/big.safetensors")
    assert whole.status_code == 200 and whole.content == data
    start, end = DOWNLOAD_CHUNK_BYTES - 5, 2 * DOWNLOAD_CHUNK_BYTES + 5  # a range across two read chunks
    part = client.get("/files/output/big.safetensors", headers={"Range": f"bytes={start}-{end}"})
    assert part.status_code == 206 and part.content == data[start : end + 1]
    ranges = client.get("/files/output/big.safetensors", headers={"Range": f"bytes=0-9,{end}-{end + 9}"})
    assert ranges.status_code == 206
    assert data[:10] in ranges.content and data[end : end + 10] in ranges.content
