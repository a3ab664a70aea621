"""Bad input on every type: one clear sentence naming the field, nothing written, no job left behind."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, func, select

from app.calls.store import Call
from app.handler import handler
from app.main import create_app
from core.contract.dispatcher import CONTRACT_TYPES, dispatch
from core.jobs.rows import Job
from core.jobs.service import JobService
from tests.fakes.trainer import make_dataset
from tests.helpers import make_settings

TYPES = ", ".join(CONTRACT_TYPES)
# A billion-laughs document: nine aliases, each nine times the one before.
YAML_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)
ESCAPING_YAML = (
    "job: extension\nconfig:\n  name: x\n  process:\n    - type: sd_trainer\n      datasets:\n"
    "        - folder_path: /etc\n      model: {name_or_path: sd15}\n"
)
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()

CASES: list[tuple[str, Any, str]] = [
    # the envelope
    ("not an object", ["health"], "input: must be a JSON object"),
    ("no type", {}, f"type: is required (one of {TYPES}); with no type, a prompt means generate"),
    ("type not text", {"type": 5}, f"type: must be a string, one of {TYPES}"),
    ("unknown type", {"type": "train_lora"}, f"type: unknown type 'train_lora'; expected one of {TYPES}"),
    # health, lora, list_models take nothing
    ("health extra", {"type": "health", "verbose": True}, "verbose: is not a known field"),
    ("lora extra", {"type": "lora", "folder": "output"}, "folder: is not a known field"),
    ("list_models extra", {"type": "list_models", "all": 1}, "all: is not a known field"),
    # upload_training_data
    (
        "upload no name",
        {"type": "upload_training_data", "files": [{"filename": "a.png", "content": PNG}]},
        "training_name: is required",
    ),
    (
        "upload escaping name",
        {"type": "upload_training_data", "training_name": "../x", "files": [{"filename": "a.png", "content": PNG}]},
        "training_name: must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
    ),
    (
        "upload no files",
        {"type": "upload_training_data", "training_name": "new", "files": []},
        "files: list should have at least 1 item after validation, not 0",
    ),
    (
        "upload files not a list",
        {"type": "upload_training_data", "training_name": "new", "files": "a.png"},
        "files: input should be a valid list",
    ),
    (
        "upload no content",
        {"type": "upload_training_data", "training_name": "new", "files": [{"filename": "a.png"}]},
        "files[0].content: is required",
    ),
    (
        "upload invalid base64",
        {
            "type": "upload_training_data",
            "training_name": "new",
            "files": [{"filename": "a.png", "content": PNG}, {"filename": "b.png", "content": "not*base64!"}],
        },
        "files[1].content: is not valid base64",
    ),
    (
        "upload truncated base64",
        {"type": "upload_training_data", "training_name": "new", "files": [{"filename": "a.png", "content": PNG[:-1]}]},
        "files[0].content: is not valid base64",
    ),
    # train
    ("train no dataset", {"type": "train"}, "training_name: is required"),
    (
        "train missing dataset",
        {"type": "train", "training_name": "missing"},
        "training_name: dataset 'missing' does not exist under training_data/",
    ),
    (
        "train escaping dataset",
        {"type": "train", "training_name": "../../etc"},
        "training_name: must be a plain name without separators",
    ),
    (
        "train wrong type",
        {"type": "train", "training_name": "faces", "steps": "many"},
        "steps: input should be a valid integer, unable to parse string as an integer",
    ),
    (
        "train out of range",
        {"type": "train", "training_name": "faces", "steps": 0},
        "steps: input should be greater than or equal to 1",
    ),
    ("train unknown field", {"type": "train", "training_name": "faces", "epochs": 3}, "epochs: is not a known field"),
    ("train wait not bool", {"type": "train", "training_name": "faces", "wait": "no"}, "wait: must be true or false"),
    # train_with_yaml
    (
        "yaml missing",
        {"type": "train_with_yaml"},
        "yaml_config: is required",
    ),
    (
        "yaml bomb",
        {"type": "train_with_yaml", "yaml_config": YAML_BOMB},
        "yaml_config: expands to more than 10000 nodes, which a training config never needs",
    ),
    (
        "yaml not yaml",
        {"type": "train_with_yaml", "yaml_config": "job: [unclosed"},
        "yaml_config: is not valid YAML or JSON (expected ',' or ']', but got '<stream end>' at line 1)",
    ),
    (
        "yaml escaping dataset",
        {"type": "train_with_yaml", "yaml_config": ESCAPING_YAML},
        "config.process[0].datasets[0].folder_path: points outside the workspace",
    ),
    (
        "yaml env reference",
        {"type": "train_with_yaml", "config": "job: extension\nconfig: {name: '${HF_TOKEN}'}"},
        "yaml_config: contains '${...}', which ai-toolkit would fill from its environment (and so could leak HF_TOKEN)",
    ),
    # generate (also by prompt alone)
    ("generate no prompt", {"type": "generate"}, "prompts: a prompt is required (prompt, or prompts as a list)"),
    # captions
    (
        "train autocaption typo",
        {"type": "train", "training_name": "faces", "autocaption": {"modle": "blip-base"}},
        "autocaption.modle: is not a known field",
    ),
    (
        "train autocaption not a flag",
        {"type": "train", "training_name": "faces", "autocaption": "yes"},
        "autocaption: must be true, false or an object with model, prefix, suffix and max_length",
    ),
    (
        "caption prefix on two lines",
        {"type": "caption_dataset", "training_name": "faces", "prefix": "a\nb"},
        "prefix: must be one line of text",
    ),
    ("caption no dataset", {"type": "caption_dataset"}, "training_name: is required"),
    (
        "caption unknown model",
        {"type": "caption_dataset", "training_name": "faces", "model": "blip"},
        "model: unknown model 'blip': use a Hugging Face repo id 'org/name', one of blip-base, blip-large, "
        "git-base, git-large, or a folder under models/",
    ),
    (
        "caption missing dataset",
        {"type": "caption_dataset", "training_name": "nobody"},
        "training_name: dataset 'nobody' does not exist under training_data/",
    ),
    (
        "caption bad max_length",
        {"type": "caption_dataset", "training_name": "faces", "max_length": 0},
        "max_length: input should be greater than or equal to 5",
    ),
    (
        "list_captions missing dataset",
        {"type": "list_captions", "training_name": "nobody"},
        "training_name: dataset 'nobody' does not exist",
    ),
    (
        "set_caption unknown image",
        {"type": "set_caption", "training_name": "faces", "image": "img_9.png", "caption": "x"},
        "image: 'img_9.png' is not an image of dataset 'faces'",
    ),
    (
        "set_caption escaping image",
        {"type": "set_caption", "training_name": "faces", "image": "../../lorapod.png", "caption": "x"},
        "image: must stay inside the dataset",
    ),
    (
        "set_caption too long",
        {"type": "set_caption", "training_name": "faces", "image": "img_0.png", "caption": "x" * 4001},
        "caption: is 4001 characters long; the limit is 4000",
    ),
    ("prompt wrong size", {"prompt": "a cat", "width": 100}, "width: must be a multiple of 8"),
    (
        "generate escaping lora",
        {"type": "generate", "prompt": "a cat", "lora": "../../etc/passwd"},
        "lora: points outside the workspace",
    ),
    # processes, process_status, cancel
    (
        "processes bad status",
        {"type": "processes", "status": "done"},
        "status: input should be 'queued', 'running', 'completed', 'failed' or 'cancelled'",
    ),
    ("processes bad limit", {"type": "processes", "limit": 0}, "limit: input should be greater than or equal to 1"),
    (
        "processes bad cursor",
        {"type": "processes", "cursor": "not-a-cursor"},
        "cursor: is not a cursor this server returned",
    ),
    ("status no id", {"type": "process_status"}, "process_id: is required"),
    (
        "status unknown id",
        {"type": "process_status", "process_id": "train_000000000000"},
        "process_id: no job with id 'train_000000000000'",
    ),
    ("cancel wrong type", {"type": "cancel", "process_id": 42}, "process_id: input should be a valid string"),
    (
        "cancel unknown id",
        {"type": "cancel", "process_id": "gen_000000000000"},
        "process_id: no job with id 'gen_000000000000'",
    ),
    # list_files
    ("list escaping dir", {"type": "list_files", "directory": "../.."}, "directory: points outside the workspace"),
    ("list absolute dir", {"type": "list_files", "directory": "/etc"}, "directory: points outside the workspace"),
    (
        "list bad pattern",
        {"type": "list_files", "pattern": "../*"},
        "pattern: must be a file-name glob such as '*.png', without '/'",
    ),
    # download_file, download, bulk_download
    (
        "file escaping",
        {"type": "download_file", "file_path": "/workspace/../etc/passwd"},
        "file_path: points outside the workspace",
    ),
    (
        "file encoded escape",
        {"type": "download_file", "file_path": "output/%2e%2e/%2e%2e/etc/passwd"},
        "file_path: contains an encoded or backslash separator",
    ),
    ("file database", {"type": "download_file", "file_path": "lorapod.db"}, "file_path: no such file in the workspace"),
    (
        "file negative offset",
        {"type": "download_file", "file_path": "x", "offset": -1},
        "offset: input should be greater than or equal to 0",
    ),
    (
        "file zero length",
        {"type": "download_file", "file_path": "x", "length": 0},
        "length: input should be greater than or equal to 1",
    ),
    ("file missing", {"type": "download_file"}, "file_path: is required"),
    ("download no id", {"type": "download", "artifact": "a.safetensors"}, "process_id: is required"),
    (
        "download unknown",
        {"type": "download", "process_id": "train_000000000000"},
        "process_id: no job with id 'train_000000000000'",
    ),
    (
        "bulk no source",
        {"type": "bulk_download"},
        "file_paths: give exactly one of file_paths, directory or process_id",
    ),
    (
        "bulk two sources",
        {"type": "bulk_download", "directory": "output", "process_id": "train_000000000000"},
        "process_id: give exactly one of file_paths, directory or process_id",
    ),
    (
        "bulk escaping path",
        {"type": "bulk_download", "file_paths": ["training_data/../../etc/passwd"]},
        "file_paths[0]: points outside the workspace",
    ),
    ("bulk escaping dir", {"type": "bulk_download", "directory": "/etc"}, "directory: points outside the workspace"),
    (
        "bulk paths not text",
        {"type": "bulk_download", "file_paths": [1]},
        "file_paths[0]: input should be a valid string",
    ),
]


def snapshot(root: Path) -> set[tuple[str, int]]:
    """Every file and folder under the workspace with its size, the database files left out."""
    found: set[tuple[str, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if not name.startswith("lorapod.db"):
                found.add((path.relative_to(root).as_posix(), path.stat().st_size if path.is_file() else -1))
    return found


@pytest.mark.parametrize(("payload", "expected"), [(p, e) for _, p, e in CASES], ids=[c[0] for c in CASES])
async def test_bad_input_is_one_sentence_and_writes_nothing(service: JobService, payload: Any, expected: str) -> None:
    make_dataset(service.workspace.training_data / "faces", 1)
    before = snapshot(service.workspace.root)
    out = await dispatch(service, payload)
    assert out == {"error": expected}
    assert snapshot(service.workspace.root) == before
    with Session(service.engine) as session:
        assert session.exec(select(func.count()).select_from(Job)).one() == 0


def test_every_type_has_a_bad_input_case() -> None:
    covered = set()
    for _, payload, _ in CASES:
        if isinstance(payload, dict):
            covered.add(payload.get("type") or ("generate" if "prompt" in payload else None))
    assert covered >= set(CONTRACT_TYPES)


async def test_the_handler_refuses_an_input_that_is_not_an_object() -> None:
    assert await handler({"id": "j1", "input": "health"}) == {
        "error": 'input: must be a JSON object, as in {"input": {"type": ...}}'
    }


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """The app with tiny payload limits: 2000 bytes for /run, 4000 for /runsync."""
    settings = make_settings(tmp_path, payload_limit_run_bytes=2000, payload_limit_runsync_bytes=4000)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def body_of(size: int) -> bytes:
    """A valid call body of exactly size bytes."""
    head = b'{"input": {"type": "health", "pad": "'
    tail = b'"}}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def calls_stored(client: TestClient) -> int:
    """How many calls the routes have recorded."""
    with Session(client.app.state.service.engine) as session:  # type: ignore[attr-defined]
        return session.exec(select(func.count()).select_from(Call)).one()


def test_oversized_payloads_are_refused_with_413(client: TestClient) -> None:
    headers = {"Content-Type": "application/json"}
    too_big = client.post("/v2/e/run", content=body_of(2001), headers=headers)
    assert too_big.status_code == 413
    assert too_big.json()["error"] == "input: the request body is larger than the limit of 2000 bytes"
    # /runsync has its own, larger limit, as on the cloud
    assert client.post("/v2/e/runsync", content=body_of(4001), headers=headers).status_code == 413
    fits = client.post("/v2/e/runsync", content=body_of(3000), headers=headers)
    assert fits.status_code == 200 and fits.json()["error"] == "pad: is not a known field"
    # A chunked body announces no size; it is counted as it arrives.
    chunked = client.post("/v2/e/run", content=iter([body_of(2500)[:1000], body_of(2500)[1000:]]), headers=headers)
    assert chunked.status_code == 413
    assert calls_stored(client) == 1  # only the call that fitted


def test_malformed_envelopes_are_refused_with_400(client: TestClient) -> None:
    assert client.post("/v2/e/run", content=b"{", headers={"Content-Type": "application/json"}).json() == {
        "error": "body: is not valid JSON",
        "field": "body",
    }
    for body in ({}, {"input": "health"}, {"input": ["health"]}, ["health"]):
        answer = client.post("/v2/e/run", json=body)
        assert answer.status_code == 400 and answer.json()["error"].startswith("input: is required")
    assert calls_stored(client) == 0
