"""Webhook delivery units: the signature matches the reference library, a name resolving to a private address is
refused at delivery time (no retry), and the secret is checked at start-up without being echoed."""

from __future__ import annotations

import base64
import json
import socket
import time
from typing import Any

import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook

from core.settings import Settings
from core.webhooks import targets
from core.webhooks.delivery import Policy, deliver
from core.webhooks.signing import secret_bytes, signed_headers

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_signatures_verify_with_the_reference_library() -> None:
    body = json.dumps({"type": "job.completed", "data": {"id": "train_1"}}).encode()
    headers = signed_headers(secret_bytes(SECRET), "msg_1", int(time.time()), body)
    assert Webhook(SECRET).verify(body, headers) == {"type": "job.completed", "data": {"id": "train_1"}}
    tampered = body.replace(b"train_1", b"train_2")
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(SECRET).verify(tampered, headers)


async def test_a_name_resolving_to_a_private_address_is_refused_once(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_getaddrinfo(host: str, port: int, **kw: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.5", port))]

    monkeypatch.setattr(targets.socket, "getaddrinfo", fake_getaddrinfo)
    attempts: list[dict[str, Any]] = []
    ok = await deliver(
        "https://rebind.example/hook",
        {"a": 1},
        key=secret_bytes(SECRET),
        policy=Policy(attempts=5, backoff_seconds=0, timeout_seconds=1, allow_private=False),
        event="job.completed",
        message_id="msg_x",
        record=attempts.append,
    )
    assert ok is False
    assert len(attempts) == 1 and attempts[0]["error"].startswith("refused: rebind.example resolves to the private")


@pytest.mark.parametrize("bad", ["short", "whsec_" + base64.b64encode(b"tiny").decode(), "whsec_!!!"])
def test_a_bad_secret_fails_at_start_up_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValidationError) as err:
        Settings(webhook_secret=bad)
    assert bad not in str(err.value) and "webhook_secret" in str(err.value)
    shown = repr(Settings(webhook_secret=SECRET)) + str(Settings(webhook_secret=SECRET).model_dump())
    assert SECRET not in shown and SECRET.removeprefix("whsec_") not in shown
