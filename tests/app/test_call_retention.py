"""A finished download call's chunk kept by reference: the row names the bytes, /status reads the same bytes again."""

from __future__ import annotations

import base64
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from app.calls.retained import CONTENT_REF, answered_output, stored_output
from app.calls.store import CALLS, CallStatus, CallStore
from core.errors import NotFound
from core.settings import Settings
from core.storage.workspace import Workspace
from tests.helpers import LiveServer, make_settings

API_KEY = "retention-key"


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """A workspace with one 3000-byte model file."""
    space = Workspace(tmp_path / "space").ensure()
    (space.models / "lora.safetensors").write_bytes(os.urandom(3000))
    return space


def chunk_of(workspace: Workspace, offset: int, length: int) -> dict[str, Any]:
    """A download_file output as the dispatcher answers it."""
    from core.contract.downloads import chunk_output
    from core.storage.files import read_chunk

    piece = read_chunk(workspace, "models/lora.safetensors", offset=offset, length=length, max_length=length)
    return chunk_output(piece)


def test_a_chunk_is_stored_without_its_bytes_and_answered_with_the_same_ones(workspace: Workspace) -> None:
    output = chunk_of(workspace, 1000, 700)
    kept = stored_output(workspace, output)
    assert kept["content"] is None and isinstance(kept[CONTENT_REF]["mtime_ns"], int)
    assert {k: v for k, v in kept.items() if k not in ("content", CONTENT_REF)} == {
        k: v for k, v in output.items() if k != "content"
    }
    assert answered_output(workspace, "c1", kept) == output
    data = (workspace.models / "lora.safetensors").read_bytes()
    assert base64.b64decode(answered_output(workspace, "c1", kept)["content"]) == data[1000:1700]


@pytest.mark.parametrize("change", ["rewritten", "removed", "grown"])
def test_a_chunk_whose_file_changed_is_gone_as_an_expired_result(workspace: Workspace, change: str) -> None:
    kept = stored_output(workspace, chunk_of(workspace, 0, 500))
    path = workspace.models / "lora.safetensors"
    if change == "removed":
        path.unlink()
    elif change == "grown":
        path.write_bytes(path.read_bytes() + b"more")
    else:
        before = path.stat().st_mtime_ns
        path.write_bytes(os.urandom(3000))  # same size, other bytes
        os.utime(path, ns=(before + 1_000_000, before + 1_000_000))
    with pytest.raises(NotFound) as raised:
        answered_output(workspace, "c1", kept)
    assert "'c1'" in raised.value.message and "models/lora.safetensors" in raised.value.message


def test_outputs_that_are_not_file_chunks_are_stored_as_they_are(workspace: Workspace) -> None:
    chunk = chunk_of(workspace, 0, 10)
    from_bucket = {**chunk, "file_path": "models/only-in-the-bucket.safetensors"}
    others: list[Any] = [None, {"status": "ok"}, {**chunk, "offset": True}, from_bucket, {**chunk, "content": 5}]
    for output in others:
        assert stored_output(workspace, output) is output
    assert stored_output(None, chunk) is chunk  # a store without a workspace keeps every byte
    assert answered_output(workspace, "c1", {"status": "ok"}) == {"status": "ok"}


async def test_the_store_keeps_chunks_by_reference_on_sqlite_and_whole_on_postgresql(
    engine: Engine, workspace: Workspace
) -> None:
    store = CallStore(
        engine, worker_id="w1", run_retention_seconds=1800, runsync_retention_seconds=60, workspace=workspace
    )
    output = chunk_of(workspace, 0, 2000)
    call = store.new({"type": "download_file"}, sync=True, ended=(CallStatus.COMPLETED, output, None))
    await store.add(call)
    with engine.connect() as connection:
        row_output = connection.execute(select(CALLS.c.output).where(CALLS.c.id == call["id"])).scalar_one()
    if engine.dialect.name == "sqlite":
        assert row_output["content"] is None and CONTENT_REF in row_output
    else:  # pods sharing PostgreSQL may not share the disk
        assert row_output == output
    assert store.answer(call["id"]).output == output


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The shared test settings with an API key."""
    return make_settings(tmp_path, api_key=API_KEY)


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    """Raw HTTP to the RunPod-compatible routes."""
    with httpx.Client(
        base_url=f"{live_server.url}/v2/ep", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    ) as client:
        yield client


def finished(api: httpx.Client, call_id: str) -> httpx.Response:
    """/status of a call once it has ended."""
    deadline = time.monotonic() + 30
    while (answer := api.get(f"/status/{call_id}")).json()["status"] in ("IN_QUEUE", "IN_PROGRESS"):
        assert time.monotonic() < deadline, "the call did not end"
        time.sleep(0.05)
    return answer


def test_a_run_download_is_read_from_its_file_on_status_until_the_file_changes(
    api: httpx.Client, live_server: LiveServer
) -> None:
    workspace = live_server.service.workspace
    path = workspace.models / "big.safetensors"
    path.write_bytes(os.urandom(50_000))
    call_id = api.post("/run", json={"input": {"type": "download_file", "file_path": "models/big.safetensors"}}).json()[
        "id"
    ]
    answer = finished(api, call_id)
    assert answer.status_code == 200 and answer.json()["status"] == "COMPLETED"
    assert base64.b64decode(answer.json()["output"]["content"]) == path.read_bytes()
    with sqlite3.connect(workspace.root / "lorapod.db") as db:
        (stored,) = db.execute("SELECT length(output) FROM calls WHERE id = ?", (call_id,)).fetchone()
    assert stored < 1000  # the row holds where the bytes are, not 67 KB of base64

    path.write_bytes(os.urandom(50_001))
    gone = api.get(f"/status/{call_id}")
    assert gone.status_code == 404 and "models/big.safetensors" in gone.text and "changed" in gone.text
