"""Captions end to end on a real uvicorn server: caption jobs, caption editing and thumbnails over REST, the
same through the stock runpod client against /v2, and autocaption on a training with the stand-in trainer."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from core.settings import Settings
from tests.fakes.tiny_caption import build_tiny_captioner, make_images
from tests.helpers import LiveServer, make_settings

API_KEY = "caption-key"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, api_key=API_KEY)


@pytest.fixture
def faces(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three images (the second captioned) and the tiny captioning model under models/."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    workspace = live_server.service.workspace
    build_tiny_captioner(workspace.models / "tiny-blip")
    return make_images(workspace.training_data / "faces", 3, captioned=(1,))


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as c:
        yield c


def wait_done(http: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """Poll the job until it is finished."""
    deadline = time.monotonic() + timeout
    while (job := http.get(f"/jobs/{job_id}").json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"{job_id} did not finish"
        time.sleep(0.1)
    return job


def test_a_caption_job_then_a_hand_edit_over_rest(http: httpx.Client, faces: Path) -> None:
    started = http.post(
        "/jobs",
        json={"type": "caption", "training_name": "faces", "model": "models/tiny-blip", "suffix": "studio light"},
    )
    assert started.status_code == 202, started.text
    job = wait_done(http, started.json()["id"])
    assert job["status"] == "completed", job["error"]
    assert job["type"] == "caption" and job["captioning"]["written"] == 2
    assert job["progress"]["step"] == job["progress"]["total_steps"] == 2
    assert [a["name"] for a in job["artifacts"]] == ["log.txt"]

    page = http.get("/datasets/faces/captions", params={"limit": 2}).json()
    assert page["total"] == 3 and page["captioned"] == 3 and page["next_cursor"] == "img_01.png"
    assert page["images"][0]["caption"].endswith(" studio light")
    assert page["images"][1]["caption"] == "old caption 1"
    last = http.get("/datasets/faces/captions", params={"cursor": page["next_cursor"]}).json()
    assert [e["image"] for e in last["images"]] == ["img_02.png"] and last["next_cursor"] is None

    edited = http.put("/datasets/faces/captions/img_02.png", json={"caption": "a photo of sks, smiling"})
    assert edited.status_code == 200 and edited.json()["caption"] == "a photo of sks, smiling"
    assert (faces / "img_02.txt").read_text() == "a photo of sks, smiling\n"


def test_caption_edits_refuse_bad_input_and_write_nothing(http: httpx.Client, faces: Path) -> None:
    before = {p.name: p.read_bytes() for p in faces.iterdir()}
    missing = http.put("/datasets/faces/captions/img_9.png", json={"caption": "x"})
    assert missing.status_code == 404
    assert missing.json() == {"error": "'img_9.png' is not an image of dataset 'faces'", "field": "image"}
    too_long = http.put("/datasets/faces/captions/img_00.png", json={"caption": "x" * 4001})
    assert too_long.status_code == 422 and too_long.json()["field"] == "caption"
    escaping = http.put("/datasets/faces/captions/%2E%2E/%2E%2E/lorapod.png", json={"caption": "x"})
    assert escaping.status_code in (404, 422) and escaping.json()["error"]
    unknown_field = http.put("/datasets/faces/captions/img_00.png", json={"text": "x"})
    assert unknown_field.status_code == 422 and unknown_field.json()["field"] in ("caption", "text")
    no_dataset = http.get("/datasets/nobody/captions")
    assert no_dataset.status_code == 404 and no_dataset.json()["field"] == "name"
    bad_model = http.post("/jobs", json={"type": "caption", "training_name": "faces", "model": "blip"})
    assert bad_model.status_code == 422 and bad_model.json()["field"] == "model"
    assert {p.name: p.read_bytes() for p in faces.iterdir()} == before
    assert http.get("/jobs").json()["data"] == []


def test_images_and_thumbnails(http: httpx.Client, faces: Path, live_server: LiveServer) -> None:
    original = http.get("/datasets/faces/images/img_00.png")
    assert original.status_code == 200 and original.headers["content-type"] == "image/png"
    assert original.content == (faces / "img_00.png").read_bytes()
    thumb = http.get("/datasets/faces/images/img_00.png", params={"size": 16})
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert image.width == 16 and image.height in (10, 11)  # 24x16 scaled to fit 16x16
    assert http.get("/datasets/faces/images/img_00.png", params={"size": 2}).status_code == 422
    assert http.get("/datasets/faces/images/img_00.txt").status_code == 422
    assert http.get("/datasets/faces/images/nothing.png").status_code == 404
    assert httpx.get(f"{live_server.url}/datasets/faces/images/img_00.png").status_code == 401


def test_a_training_with_autocaption_over_rest(http: httpx.Client, faces: Path) -> None:
    started = http.post(
        "/jobs",
        json={
            "type": "train",
            "training_name": "faces",
            "base_model": "sd15",
            "steps": 4,
            "save_every": 2,
            "autocaption": {"model": "models/tiny-blip", "prefix": "auto:"},
        },
    )
    assert started.status_code == 202, started.text
    job = wait_done(http, started.json()["id"])
    assert job["status"] == "completed", job["error"]
    assert job["phase"] == "training" and job["captioning"]["written"] == 2
    assert job["progress"]["step"] == 4 and job["params"]["autocaption"]["prefix"] == "auto:"
    assert (faces / "img_00.txt").read_text().startswith("auto: ")
    assert any(a["kind"] == "lora" for a in job["artifacts"])


def test_the_stock_runpod_client_captions_and_edits(
    live_server: LiveServer, faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runpod

    monkeypatch.setattr(runpod, "api_key", API_KEY)
    monkeypatch.setattr(runpod, "endpoint_url_base", f"{live_server.url}/v2")
    endpoint = runpod.Endpoint("lorapod-endpoint")
    process = endpoint.run_sync(
        {"type": "caption_dataset", "training_name": "faces", "model": "models/tiny-blip", "trigger_word": "sks"},
        timeout=120,
    )
    assert process["status"] == "completed" and process["captioning"]["written"] == 2
    assert (faces / "img_00.txt").read_text().startswith("sks, ")

    listed = endpoint.run_sync({"type": "list_captions", "training_name": "faces", "limit": 1}, timeout=60)
    assert listed["total"] == 3 and [e["image"] for e in listed["images"]] == ["img_00.png"]
    edited = endpoint.run_sync(
        {"type": "set_caption", "training_name": "faces", "image": "img_01.png", "caption": "by hand"}, timeout=60
    )
    assert edited["caption"] == "by hand" and (faces / "img_01.txt").read_text() == "by hand\n"
    escape = {"type": "set_caption", "training_name": "faces", "image": "../x.png", "caption": "x"}
    assert endpoint.run_sync(escape, timeout=60) is None  # the stock client drops a FAILED call's error
    call = httpx.post(
        f"{live_server.url}/v2/lorapod-endpoint/runsync",
        json={"input": escape},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    ).json()
    assert call["status"] == "FAILED" and call["error"] == "image: must stay inside the dataset"
    assert not (faces.parent / "x.txt").exists()
