"""The one object-storage interface: an S3-compatible bucket through boto3 (no hand-written signing).

Configured with RunPod's own worker variables (BUCKET_ENDPOINT_URL, BUCKET_ACCESS_KEY_ID,
BUCKET_SECRET_ACCESS_KEY) plus LORAPOD_BUCKET and LORAPOD_BUCKET_PREFIX. Every key lorapod writes lives
under the prefix. Errors come back as StorageError (the bucket cannot be used: credentials, unknown
bucket, unreachable endpoint) or ObjectMissing (a key that should be there is not), never as botocore's
own exceptions, and never with a secret in the message.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from core.errors import InvalidInput, NotFound, Unavailable
from core.settings import Settings
from core.storage.bucket_location import BucketLocation, bucket_location
from core.storage.files import hash_file

# Files above this go up in parts of this size, several at once (boto3's managed transfer).
MULTIPART_BYTES = 8 * 1024 * 1024
# Health asks the bucket at most this often: an unreachable endpoint costs seconds of timeouts each time.
STATUS_SECONDS = 15.0
_CHUNK = 1024 * 1024


class StorageError(Unavailable):
    """The bucket cannot be used: wrong credentials, unknown bucket, unreachable endpoint, a failed transfer."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="storage")


class ObjectMissing(NotFound):
    """An object lorapod recorded is no longer in the bucket."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """Where one file lives in the bucket, its size and its sha256 (hex)."""

    key: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, as kept in job records and manifests."""
        return asdict(self)


class ObjectStore:
    """One bucket under one key prefix."""

    def __init__(
        self,
        location: BucketLocation,
        *,
        access_key_id: str,
        secret_access_key: str,
        prefix: str = "",
        presign_seconds: int = 3600,
    ) -> None:
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.location = location
        self.bucket = location.bucket
        self.prefix = prefix.strip("/")
        self.presign_seconds = presign_seconds
        self.last_error: str | None = None
        self._checked_at: float | None = None
        config = Config(
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=120,
        )
        # A session of our own: the secret goes to this client only, never into the process environment.
        session = boto3.session.Session()
        self.client = session.client(
            "s3",
            endpoint_url=location.endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=location.region or "us-east-1",
            config=config,
        )
        self._transfer = TransferConfig(
            multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES, max_concurrency=4
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ObjectStore | None:
        """The configured bucket, or None when BUCKET_ENDPOINT_URL is unset (the workspace alone, as before)."""
        if not settings.bucket_endpoint_url:
            return None
        missing = [
            name
            for name, value in (
                ("BUCKET_ACCESS_KEY_ID", settings.bucket_access_key_id),
                ("BUCKET_SECRET_ACCESS_KEY", settings.bucket_secret_access_key),
            )
            if not value
        ]
        if missing:
            raise InvalidInput(missing[0], "is required when BUCKET_ENDPOINT_URL is set")
        assert settings.bucket_access_key_id and settings.bucket_secret_access_key
        return cls(
            bucket_location(settings.bucket_endpoint_url, settings.bucket),
            access_key_id=settings.bucket_access_key_id,
            secret_access_key=settings.bucket_secret_access_key.get_secret_value(),
            prefix=settings.bucket_prefix,
            presign_seconds=settings.presign_seconds,
        )

    # ----- names

    def key(self, *parts: str) -> str:
        """A key under the prefix, from path parts (which never start or end with '/')."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))

    # ----- health

    def check(self) -> None:
        """Reach the bucket with the credentials given; StorageError saying what is wrong otherwise."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            self.last_error = self._explain(exc, "access check").message
            raise StorageError(self.last_error) from None
        self.last_error = None

    def status(self) -> dict[str, Any]:
        """Health of the bucket (checked at most every STATUS_SECONDS); endpoint, bucket, prefix, never a key."""
        now = time.monotonic()
        if self._checked_at is None or now - self._checked_at >= STATUS_SECONDS:
            self._checked_at = now
            with contextlib.suppress(StorageError):  # the error is kept in last_error
                self.check()
        return {
            "configured": True,
            "ok": self.last_error is None,
            "endpoint": self.location.endpoint_url,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "error": self.last_error,
        }

    # ----- writing

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> ObjectInfo:
        """Upload a file (multipart above MULTIPART_BYTES, each part checksummed) and verify what landed."""
        size = path.stat().st_size
        sha256 = hash_file(path)
        extra: dict[str, Any] = {"ChecksumAlgorithm": "SHA256", "Metadata": {"sha256": sha256}}
        if content_type:
            extra["ContentType"] = content_type
        try:
            self.client.upload_file(str(path), self.bucket, key, Config=self._transfer, ExtraArgs=extra)
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._explain(exc, f"upload of '{key}'") from None
        landed = (int(head.get("ContentLength", -1)), head.get("Metadata", {}).get("sha256"))
        if landed != (size, sha256):
            raise StorageError(f"upload of '{key}' did not verify: the bucket holds {landed[0]} bytes, sent {size}")
        return ObjectInfo(key=key, size=size, sha256=sha256)

    def put_json(self, key: str, value: Any) -> None:
        """Write a small JSON document in one request (an object appears whole or not at all)."""
        body = json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType="application/json",
                ChecksumAlgorithm="SHA256",
            )
        except Exception as exc:
            raise self._explain(exc, f"write of '{key}'") from None

    # ----- reading

    def get_json(self, key: str) -> Any | None:
        """A JSON document, or None when there is no such key."""
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise self._explain(exc, f"read of '{key}'") from None
        return json.loads(body)

    def head(self, key: str) -> ObjectInfo | None:
        """Size and recorded sha256 of an object, or None when it is not there."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise self._explain(exc, f"lookup of '{key}'") from None
        return ObjectInfo(key=key, size=int(head["ContentLength"]), sha256=head.get("Metadata", {}).get("sha256", ""))

    def get_file(self, key: str, dest: Path, *, sha256: str | None = None) -> None:
        """Download an object to dest through a temporary file; the sha256 is checked before the rename."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=".lorapod-get-", suffix=".part")
        os.close(fd)
        temp = Path(name)
        try:
            try:
                self.client.download_file(self.bucket, key, str(temp), Config=self._transfer)
            except Exception as exc:
                if _is_missing(exc):
                    raise self.missing(key) from None
                raise self._explain(exc, f"download of '{key}'") from None
            if sha256 and hash_file(temp) != sha256:
                raise StorageError(f"object '{key}' does not match its recorded sha256; it was changed or damaged")
            os.replace(temp, dest)
        finally:
            temp.unlink(missing_ok=True)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """length bytes of an object from offset (fewer at its end)."""
        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}"
            )
            return bytes(response["Body"].read())
        except Exception as exc:
            if _is_missing(exc):
                raise self.missing(key) from None
            raise self._explain(exc, f"read of '{key}'") from None

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under a prefix (which should end with '/')."""
        keys: list[str] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except Exception as exc:
            raise self._explain(exc, f"listing of '{prefix}'") from None
        return keys

    def presign(self, key: str, *, filename: str | None = None) -> dict[str, Any]:
        """A pre-signed GET URL and when it expires; the caller may use it, lorapod never logs it."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if filename:
            params["ResponseContentDisposition"] = f"attachment; filename*=UTF-8''{quote(filename)}"
        try:
            url = self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=self.presign_seconds)
        except Exception as exc:
            raise self._explain(exc, f"signing of '{key}'") from None
        expires = datetime.now(UTC) + timedelta(seconds=self.presign_seconds)
        return {"url": url, "expires_in": self.presign_seconds, "expires_at": expires.isoformat()}

    # ----- deleting

    def delete(self, key: str) -> None:
        """Remove one object (no error when it is already gone)."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            raise self._explain(exc, f"deletion of '{key}'") from None

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under a prefix."""
        keys = self.list_keys(prefix)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            try:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except Exception as exc:
                raise self._explain(exc, f"deletion under '{prefix}'") from None

    # ----- errors

    def missing(self, key: str) -> ObjectMissing:
        """The error for an object that should be there and is not."""
        return ObjectMissing(f"object '{key}' is missing from bucket '{self.bucket}'", field="storage")

    def _explain(self, exc: Exception, what: str) -> StorageError:
        """One clear sentence for a botocore failure; never the credentials, never a signed URL."""
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId") or (
                code in ("403", "AccessDenied") or status == 403
            ):
                return StorageError(
                    f"{what}: bucket '{self.bucket}' refused the credentials "
                    "(check BUCKET_ACCESS_KEY_ID and BUCKET_SECRET_ACCESS_KEY, and the key's access to the bucket)"
                )
            if code in ("NoSuchBucket", "404", "NotFound") or status == 404:
                return StorageError(
                    f"{what}: bucket '{self.bucket}' does not exist at {self.location.endpoint_url} "
                    "(check LORAPOD_BUCKET or BUCKET_ENDPOINT_URL)"
                )
            return StorageError(f"{what} failed in bucket '{self.bucket}': {code or status} {error.get('Message', '')}")
        if isinstance(exc, BotoCoreError):
            return StorageError(f"{what}: cannot reach {self.location.endpoint_url}: {type(exc).__name__}")
        if isinstance(exc, StorageError):
            return exc
        return StorageError(f"{what} failed: {type(exc).__name__}: {exc}")


def _is_missing(exc: Exception) -> bool:
    """True for a 404 on an object (not on the bucket itself)."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket")
