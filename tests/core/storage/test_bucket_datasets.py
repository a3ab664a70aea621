"""Datasets in the bucket: manifests, materialisation on another worker with reuse, interrupted uploads."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from core.errors import NotFound
from core.storage.bucket_datasets import BucketDatasetStore
from core.storage.objects import ObjectMissing, ObjectStore, StorageError
from core.storage.workspace import Workspace
from tests.fakes.trainer import make_dataset
from tests.helpers import make_settings
from tests.s3server import S3Server

LIMITS = {"max_file_bytes": 10**7, "max_upload_bytes": 10**8, "max_zip_entries": 100}


def datasets(tmp_path: Path, name: str, s3_server: S3Server, bucket: str) -> BucketDatasetStore:
    settings = make_settings(tmp_path / name, **s3_server.settings(bucket))
    objects = ObjectStore.from_settings(settings)
    assert objects is not None
    return BucketDatasetStore(Workspace(settings.workspace).ensure(), objects, **LIMITS)


def b64_files(folder: Path) -> list[dict[str, Any]]:
    return [
        {"filename": p.name, "content": base64.b64encode(p.read_bytes()).decode()} for p in sorted(folder.iterdir())
    ]


@pytest.fixture
def pair(tmp_path: Path, s3_server: S3Server) -> tuple[BucketDatasetStore, BucketDatasetStore, str]:
    bucket = s3_server.new_bucket()
    return datasets(tmp_path, "a", s3_server, bucket), datasets(tmp_path, "b", s3_server, bucket), bucket


def test_an_upload_writes_a_manifest_and_another_worker_materialises_it(
    pair: tuple[BucketDatasetStore, BucketDatasetStore, str], tmp_path: Path, s3_server: S3Server
) -> None:
    first, second, bucket = pair
    source = make_dataset(tmp_path / "src", 2)
    summary = first.save_base64("faces", b64_files(source))
    assert summary.images == 2 and summary.captions == 2

    manifest = json.loads(
        s3_server.client().get_object(Bucket=bucket, Key="datasets/faces/manifest.json")["Body"].read()
    )
    entries = {e["path"]: e for e in manifest["files"]}
    assert set(entries) == {"img_0.png", "img_0.txt", "img_1.png", "img_1.txt"}
    assert entries["img_0.png"]["caption"] == "a photo of sks thing number 0"
    assert entries["img_1.png"]["size"] == (source / "img_1.png").stat().st_size

    # the other worker lists it from the manifest, then materialises it, then reuses its copy
    assert [d.name for d in second.list()] == ["faces"] and second.get("faces").images == 2
    assert second.materialise("faces") == {"downloaded": 4, "reused": 0}
    for path in source.iterdir():
        assert (second.folder("faces") / path.name).read_bytes() == path.read_bytes()
    assert second.materialise("faces") == {"downloaded": 0, "reused": 4}

    # a local copy that drifted is put right: a changed file fetched again, a stray file removed
    (second.folder("faces") / "img_0.txt").write_text("edited here")
    (second.folder("faces") / "stray.png").write_bytes((source / "img_1.png").read_bytes())
    assert second.materialise("faces") == {"downloaded": 1, "reused": 3}
    assert (second.folder("faces") / "img_0.txt").read_bytes() == (source / "img_0.txt").read_bytes()
    assert not (second.folder("faces") / "stray.png").exists()

    # an upload on the second worker adds to what the first uploaded
    more = make_dataset(tmp_path / "more", 3)
    second.save_base64("faces", b64_files(more)[4:])  # img_2.png, img_2.txt
    assert first.materialise("faces")["downloaded"] == 2 and first.get("faces").images == 3


def test_an_interrupted_upload_leaves_no_manifest_and_lists_nothing(
    pair: tuple[BucketDatasetStore, BucketDatasetStore, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second, _ = pair
    real_put = first.objects.put_file
    calls: list[str] = []

    def put_file(key: str, path: Path, **kwargs: Any) -> Any:
        calls.append(key)
        if len(calls) == 3:  # the connection drops in the middle of the upload
            raise StorageError(f"upload of '{key}': cannot reach the endpoint: ConnectionClosedError")
        return real_put(key, path, **kwargs)

    monkeypatch.setattr(first.objects, "put_file", put_file)
    with pytest.raises(StorageError, match="ConnectionClosedError"):
        first.save_base64("faces", b64_files(make_dataset(tmp_path / "src", 2)))
    assert second.list() == [] and first.list() == []
    with pytest.raises(NotFound, match="dataset 'faces' does not exist"):
        second.get("faces")
    with pytest.raises(NotFound, match="dataset 'faces' does not exist in the bucket"):
        second.materialise("faces")


def test_a_vanished_dataset_file_is_named(
    pair: tuple[BucketDatasetStore, BucketDatasetStore, str], tmp_path: Path, s3_server: S3Server
) -> None:
    first, second, bucket = pair
    first.save_base64("faces", b64_files(make_dataset(tmp_path / "src", 1)))
    entry = next(e for e in first.manifest("faces")["files"] if e["path"] == "img_0.png")  # type: ignore[index]
    s3_server.client().delete_object(Bucket=bucket, Key=f"datasets/faces/blobs/{entry['sha256']}")
    with pytest.raises(ObjectMissing, match=r"dataset 'faces': file 'img_0.png' is missing from bucket"):
        second.materialise("faces")


def test_deleting_a_dataset_removes_it_for_every_worker(
    pair: tuple[BucketDatasetStore, BucketDatasetStore, str], tmp_path: Path, s3_server: S3Server
) -> None:
    first, second, bucket = pair
    first.save_base64("faces", b64_files(make_dataset(tmp_path / "src", 1)))
    second.materialise("faces")
    second.delete("faces")
    assert first.list() == [] and not second.folder("faces").exists()
    assert s3_server.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_concurrent_uploads_on_one_worker_both_land(
    pair: tuple[BucketDatasetStore, BucketDatasetStore, str], tmp_path: Path
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    first, second, _ = pair
    batches = [b64_files(make_dataset(tmp_path / f"src{i}", 1)) for i in range(4)]
    for index, batch in enumerate(batches):  # distinct names per batch
        for item in batch:
            item["filename"] = f"b{index}_{item['filename']}"
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda batch: first.save_base64("faces", batch), batches))
    assert second.get("faces").images == 4 and second.get("faces").captions == 4
