"""The storage interface against a real S3-compatible server: where the bucket comes from, multipart uploads
with checksums, verified downloads, and clear errors for bad credentials, unknown buckets, missing objects."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import httpx
import pytest

from core.errors import InvalidInput
from core.storage.bucket_location import bucket_location
from core.storage.objects import MULTIPART_BYTES, ObjectMissing, ObjectStore, StorageError
from tests.helpers import make_settings
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Server


@pytest.mark.parametrize(
    ("url", "bucket", "expected"),
    [
        (
            "https://my-loras.s3.eu-west-2.amazonaws.com",
            None,
            ("https://s3.eu-west-2.amazonaws.com", "my-loras", "eu-west-2"),
        ),
        (
            "https://my-loras.nyc3.digitaloceanspaces.com",
            None,
            ("https://nyc3.digitaloceanspaces.com", "my-loras", "nyc3"),
        ),
        (
            "https://s3.us-east-1.amazonaws.com/my-loras",
            None,
            ("https://s3.us-east-1.amazonaws.com", "my-loras", "us-east-1"),
        ),
        ("http://127.0.0.1:9000/loras/", None, ("http://127.0.0.1:9000", "loras", None)),
        ("http://127.0.0.1:9000", "chosen", ("http://127.0.0.1:9000", "chosen", None)),
        ("https://abc.r2.cloudflarestorage.com", "chosen", ("https://abc.r2.cloudflarestorage.com", "chosen", None)),
    ],
)
def test_the_bucket_is_read_from_the_endpoint_url_unless_named(
    url: str, bucket: str | None, expected: tuple[str, str, str | None]
) -> None:
    location = bucket_location(url, bucket)
    assert (location.endpoint_url, location.bucket, location.region) == expected


def test_no_bucket_anywhere_is_a_clear_settings_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as caught:
        bucket_location("https://abc.r2.cloudflarestorage.com", None)
    assert caught.value.field == "LORAPOD_BUCKET"
    settings = make_settings(tmp_path, bucket_endpoint_url="http://127.0.0.1:1/b", bucket_access_key_id="k")
    with pytest.raises(InvalidInput, match="BUCKET_SECRET_ACCESS_KEY: is required"):
        ObjectStore.from_settings(settings)
    assert ObjectStore.from_settings(make_settings(tmp_path)) is None
    assert SECRET_KEY not in repr(make_settings(tmp_path, bucket_secret_access_key=SECRET_KEY))


def store(s3_server: S3Server, bucket: str, **overrides: object) -> ObjectStore:
    settings = make_settings(Path("/nonexistent"), **{**s3_server.settings(bucket, prefix="p"), **overrides})
    objects = ObjectStore.from_settings(settings)
    assert objects is not None
    return objects


def test_a_large_file_goes_up_in_parts_and_comes_back_verified(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    objects = store(s3_server, bucket)
    data = os.urandom(MULTIPART_BYTES * 2 + 12345)
    source = tmp_path / "big.safetensors"
    source.write_bytes(data)
    info = objects.put_file(objects.key("jobs", "j", "big.safetensors"), source)
    assert info.key == "p/jobs/j/big.safetensors" and info.size == len(data)
    assert info.sha256 == hashlib.sha256(data).hexdigest()
    head = s3_server.client().head_object(Bucket=bucket, Key=info.key, ChecksumMode="ENABLED")
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    assert "ChecksumSHA256" in head  # each part carried a checksum the server checked

    target = tmp_path / "back" / "big.safetensors"
    objects.get_file(info.key, target, sha256=info.sha256)
    assert target.read_bytes() == data
    assert objects.read_range(info.key, 10, 5) == data[10:15]
    assert httpx.get(objects.presign(info.key)["url"]).content == data


def test_a_changed_object_fails_verification_and_leaves_nothing(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    objects = store(s3_server, bucket)
    (tmp_path / "a").write_bytes(b"original")
    info = objects.put_file("p/a", tmp_path / "a")
    s3_server.client().put_object(Bucket=bucket, Key="p/a", Body=b"tampered")
    target = tmp_path / "out" / "a"
    with pytest.raises(StorageError, match="does not match its recorded sha256"):
        objects.get_file("p/a", target, sha256=info.sha256)
    assert not target.exists() and list((tmp_path / "out").iterdir()) == []


def test_a_missing_object_is_named(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.new_bucket()
    objects = store(s3_server, bucket)
    with pytest.raises(ObjectMissing, match=f"object 'p/gone' is missing from bucket '{bucket}'"):
        objects.get_file("p/gone", tmp_path / "gone")
    assert objects.head("p/gone") is None and objects.get_json("p/gone.json") is None


def test_an_unknown_bucket_is_reported_clearly(s3_server: S3Server) -> None:
    objects = store(s3_server, "no-such-bucket-here")
    with pytest.raises(StorageError, match=r"bucket 'no-such-bucket-here' does not exist at http://127\.0\.0\.1"):
        objects.check()
    status = objects.status()
    assert status["ok"] is False and "does not exist" in status["error"]


def test_refused_credentials_are_reported_without_the_secret(caplog: pytest.LogCaptureFixture) -> None:
    strict = S3Server(require_auth=True)  # this server knows no key at all
    try:
        objects = store(strict, "loras")
        with caplog.at_level(logging.DEBUG), pytest.raises(StorageError) as caught:
            objects.check()
        status = objects.status()
    finally:
        strict.stop()
    assert "refused the credentials (check BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY" in caught.value.message
    assert status["ok"] is False and status["bucket"] == "loras"
    for text in (caught.value.message, str(status), caplog.text):
        assert SECRET_KEY not in text
    assert ACCESS_KEY not in str(status)
