"""Standard Webhooks signatures (https://www.standardwebhooks.com), so receivers can verify with any of its libraries.

The signed content is `<webhook-id>.<webhook-timestamp>.<body>`; the signature is HMAC-SHA256 with the secret's
bytes (the base64 after `whsec_`), base64-encoded and sent as `v1,<signature>` in `webhook-signature`. This is
ten lines of stdlib, so the server needs no extra package; the tests verify with the `standardwebhooks` library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

PREFIX = "whsec_"
MIN_SECRET_BYTES = 16


def secret_bytes(secret: str) -> bytes:
    """The key of a `whsec_<base64>` secret (the prefix is optional); ValueError when it is not one."""
    text = secret.strip().removeprefix(PREFIX)
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be base64, optionally prefixed with whsec_ (e.g. whsec_ plus 32 random bytes)") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"must hold at least {MIN_SECRET_BYTES} bytes of key")
    return key


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for one message."""
    content = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers plus the JSON content type."""
    return {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, message_id, timestamp, body),
    }
