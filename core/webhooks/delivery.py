"""Sending one signed webhook message, with retries and backoff, recording every attempt."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.webhooks.signing import signed_headers
from core.webhooks.targets import WebhookRefused, resolve

log = logging.getLogger("lorapod.webhooks")
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Policy:
    """How hard to try: attempts in all, the first backoff (doubling), the timeout of one attempt."""

    attempts: int
    backoff_seconds: float
    timeout_seconds: float
    allow_private: bool


class _PinnedHTTP(http.client.HTTPConnection):
    """HTTP to an address already checked, with the URL's host in the Host header."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    """HTTPS to an address already checked; the certificate is verified against the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def post_once(url: str, body: bytes, headers: dict[str, str], *, timeout: float, allow_private: bool) -> int:
    """One POST (blocking); the status code. Raises WebhookRefused or OSError/HTTPException."""
    parts, address, port = resolve(url, allow_private=allow_private)
    host = parts.hostname or ""
    kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    connection = kind(host, port, address, timeout)
    try:
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", path, body=body, headers={**headers, "user-agent": "lorapod-webhooks"})
        response = connection.getresponse()
        response.read(MAX_RESPONSE_BYTES)
        return int(response.status)
    finally:
        connection.close()


def new_message_id() -> str:
    """A fresh webhook-id (the same id is kept across the retries of one message)."""
    return f"msg_{uuid.uuid4().hex}"


async def deliver(
    url: str,
    payload: dict[str, Any],
    *,
    key: bytes,
    policy: Policy,
    event: str,
    message_id: str,
    record: Callable[[dict[str, Any]], None],
) -> bool:
    """POST payload until a 2xx answer or the attempts run out; record(attempt) after each. True when delivered."""
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    for attempt in range(1, policy.attempts + 1):
        timestamp = int(time.time())
        headers = signed_headers(key, message_id, timestamp, body)
        status: int | None = None
        error: str | None = None
        final = False
        try:
            status = await asyncio.to_thread(
                post_once, url, body, headers, timeout=policy.timeout_seconds, allow_private=policy.allow_private
            )
            if not 200 <= status < 300:
                error = f"answered HTTP {status}"
        except WebhookRefused as exc:
            error, final = f"refused: {exc}", True
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        record(
            {
                "event": event,
                "webhook_id": message_id,
                "attempt": attempt,
                "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "status_code": status,
                "error": error,
            }
        )
        if error is None:
            return True
        if final or attempt == policy.attempts:
            log.warning("webhook %s (%s) not delivered after %d attempts: %s", message_id, event, attempt, error)
            return False
        await asyncio.sleep(policy.backoff_seconds * 2 ** (attempt - 1))
    return False
