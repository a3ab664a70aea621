"""Where the bucket is: BUCKET_ENDPOINT_URL split into the service endpoint, the bucket's name and its region."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from core.errors import InvalidInput

# <bucket>.s3.<region>.amazonaws.com, <bucket>.s3-<region>..., <bucket>.<region>.digitaloceanspaces.com:
# the virtual-hosted names RunPod's docs ask for ("the endpoint URL should include your bucket name").
_VIRTUAL_HOST = re.compile(
    r"^(?P<bucket>[a-z0-9][a-z0-9.-]*?)\.(?P<rest>s3[.-].+|[a-z0-9-]+\.digitaloceanspaces\.com)$"
)


@dataclass(frozen=True, slots=True)
class BucketLocation:
    """The service endpoint, the bucket's name and the signing region (None: the endpoint's default)."""

    endpoint_url: str
    bucket: str
    region: str | None


def region_of(host: str) -> str | None:
    """The region in an endpoint's host name, read as the runpod SDK's upload helper reads it."""
    if ".s3." in host:
        return host.split(".s3.", 1)[1].split(".")[0] or None
    if host.startswith("s3.") and host.count(".") >= 3:
        return host.split(".")[1]
    if host.endswith(".digitaloceanspaces.com"):
        return host.removesuffix(".digitaloceanspaces.com").rsplit(".", 1)[-1]
    return None


def bucket_location(endpoint_url: str, bucket: str | None) -> BucketLocation:
    """Split BUCKET_ENDPOINT_URL into the service endpoint and the bucket (LORAPOD_BUCKET wins when set).

    The bucket is read from the URL the way RunPod's docs write it: virtual-hosted
    (https://<bucket>.s3.<region>.amazonaws.com, https://<bucket>.<region>.digitaloceanspaces.com) or
    path-style (https://host/<bucket>); boto3 is then pointed at the service endpoint without it.
    """
    parts = urlsplit(endpoint_url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("BUCKET_ENDPOINT_URL", "must be an http(s) URL such as https://s3.us-east-1.amazonaws.com")
    host = parts.hostname.lower()
    netloc = parts.netloc.lower()
    segments = [s for s in parts.path.split("/") if s]
    named: str | None = None
    if (match := _VIRTUAL_HOST.match(host)) and not host.startswith("s3."):
        named = match["bucket"]
        netloc = netloc.replace(host, match["rest"], 1)
        host = match["rest"]
    elif segments:
        named = segments[0]
        segments = segments[1:]
    name = bucket or named
    if not name:
        raise InvalidInput(
            "LORAPOD_BUCKET",
            "is not set and BUCKET_ENDPOINT_URL names no bucket "
            "(use https://<bucket>.s3.<region>.amazonaws.com, https://<host>/<bucket>, or set LORAPOD_BUCKET)",
        )
    endpoint = urlunsplit((parts.scheme, netloc, "/".join(segments), "", ""))
    return BucketLocation(endpoint_url=endpoint.rstrip("/"), bucket=name, region=region_of(host))
