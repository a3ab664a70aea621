"""A real S3-compatible HTTP server on loopback for the bucket tests: moto's server mode in a subprocess."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from typing import Any

from tests.helpers import free_port

ACCESS_KEY = "lorapod-test-key"
# A recognisable secret, so tests can prove it never reaches a log, a record or an answer.
SECRET_KEY = "s3cr3t-NEVER-LOGGED-7f1c"


class S3Server:
    """moto_server on a free loopback port; `require_auth` makes it refuse every key (bad credentials)."""

    def __init__(self, *, require_auth: bool = False) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        if require_auth:
            env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:  # a TCP probe, not an HTTP request: an authenticating server would count it as an action
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.05)

    def client(self) -> Any:
        """A boto3 client of the server, for setting up and inspecting buckets in tests."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )

    def new_bucket(self) -> str:
        """A fresh, empty bucket (one per test keeps tests independent on the shared server)."""
        name = f"lorapod-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings(self, bucket: str, *, prefix: str = "") -> dict[str, object]:
        """Settings overrides pointing lorapod at a bucket of this server (the bucket named by LORAPOD_BUCKET)."""
        return {
            "bucket_endpoint_url": self.url,
            "bucket_access_key_id": ACCESS_KEY,
            "bucket_secret_access_key": SECRET_KEY,
            "bucket": bucket,
            "bucket_prefix": prefix,
        }

    def env(self, bucket: str, *, prefix: str = "") -> dict[str, str]:
        """A worker's environment for a bucket, as RunPod sets it: the bucket named in the endpoint URL (path-style)."""
        env = {
            "BUCKET_ENDPOINT_URL": f"{self.url}/{bucket}",
            "BUCKET_ACCESS_KEY_ID": ACCESS_KEY,
            "BUCKET_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        if prefix:
            env["LORAPOD_BUCKET_PREFIX"] = prefix
        return env

    def stop(self) -> None:
        """Stop the server."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
