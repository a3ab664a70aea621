"""A call's answer sent with a download chunk's base64 in slices: the very bytes and headers of the whole answer."""

from __future__ import annotations

import base64
import os
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.calls import responses
from app.calls.responses import SLICE_CHARS, CallResponse, call_json


def chunk_view(raw_bytes: int) -> dict[str, Any]:
    """A finished download call as /status shows it, its chunk raw_bytes long."""
    content = base64.b64encode(os.urandom(raw_bytes)).decode()
    output = {"file_path": "output/x/é.safetensors", "name": "é.safetensors", "content": content, "size": 9 * raw_bytes}
    output |= {"offset": 0, "length": raw_bytes, "next_offset": raw_bytes, "done": False, "sha256": "ab" * 32}
    return {
        "id": "sync-1",
        "status": "COMPLETED",
        "delayTime": 1,
        "executionTime": 2,
        "workerId": "w",
        "output": output,
    }


def served(view: dict[str, Any]) -> Any:
    """The response an app route answering with CallResponse(view) sends."""
    app = FastAPI()

    @app.get("/call")
    async def call() -> CallResponse:
        return CallResponse(view)

    with TestClient(app) as client:
        return client.get("/call")


@pytest.mark.parametrize("raw_bytes", [10, SLICE_CHARS, 3 * SLICE_CHARS + 7])
def test_the_answer_is_the_bytes_and_length_of_the_whole_json(raw_bytes: int) -> None:
    view = chunk_view(raw_bytes)
    answer = served(view)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.content == call_json(view)
    assert int(answer.headers["content-length"]) == len(call_json(view))


def test_a_big_content_goes_out_in_slices_never_encoded_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    view = chunk_view(3 * SLICE_CHARS)
    encoded: list[int] = []

    def counting(value: Any) -> bytes:
        body = call_json(value)
        encoded.append(len(body))
        return body

    monkeypatch.setattr(responses, "call_json", counting)
    assert served(view).content == call_json(view)
    assert encoded and max(encoded) < 2048  # only the answer without its content was encoded


def test_answers_without_a_big_content_are_sent_whole() -> None:
    for view in ({"id": "a", "status": "IN_QUEUE", "delayTime": 0, "executionTime": 0}, chunk_view(30)):
        response = CallResponse(view)
        assert response.body == call_json(view)
