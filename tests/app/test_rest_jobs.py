"""REST /jobs through the in-process client, with the stand-in trainer as a real subprocess."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.fakes.trainer import make_dataset
from tests.helpers import make_settings, parse_sse, running_app

TRAIN: dict[str, Any] = {
    "type": "train",
    "training_name": "faces",
    "base_model": "sd15",
    "steps": 12,
    "save_every": 5,
    "sample_every": 5,
    "sample_prompts": ["a photo of [trigger]"],
    "trigger_word": "sks",
}
TERMINAL = {"completed", "failed", "cancelled"}


def wait_for(client: TestClient, job_id: str, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    """Poll GET /jobs/{id} until the job reaches one of statuses."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, f"{job_id} stayed {job['status']}, wanted {statuses}"
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def faces(settings: Settings) -> None:
    """A two-image dataset 'faces' in the test's workspace."""
    make_dataset(Path(settings.workspace) / "training_data" / "faces", 2)


@pytest.fixture
def finished(client: TestClient) -> dict[str, Any]:
    """A completed training."""
    response = client.post("/jobs", json=TRAIN)
    assert response.status_code == 202, response.text
    job = wait_for(client, response.json()["id"], TERMINAL)
    assert job["status"] == "completed", job["error"]
    return job


def lora_of(job: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in job["artifacts"] if a["kind"] == "lora")


# ----- submit


def test_submit_answers_202_with_the_job_links_and_location(client: TestClient) -> None:
    response = client.post("/jobs", json=TRAIN)
    assert response.status_code == 202
    job = response.json()
    assert job["id"].startswith("train_") and job["process_id"] == job["id"]
    assert job["type"] == "train" and job["status"] in {"queued", "running"}
    assert job["dataset"] == "faces" and job["params"]["steps"] == 12
    assert job["links"] == {
        "self": f"/jobs/{job['id']}",
        "cancel": f"/jobs/{job['id']}/cancel",
        "events": f"/jobs/{job['id']}/events",
        "logs": f"/jobs/{job['id']}/logs",
        "artifacts": f"/jobs/{job['id']}/artifacts",
        "save": f"/jobs/{job['id']}/save",
        "sample": f"/jobs/{job['id']}/sample",
        "resume": f"/jobs/{job['id']}/resume",
        "retry": f"/jobs/{job['id']}/retry",
    }
    assert response.headers["location"] == job["links"]["self"]
    wait_for(client, job["id"], TERMINAL)


def test_idempotency_key_returns_the_same_job(client: TestClient) -> None:
    first = client.post("/jobs", json=TRAIN, headers={"Idempotency-Key": "retry-1"})
    again = client.post("/jobs", json=TRAIN, headers={"Idempotency-Key": "retry-1"})
    other = client.post("/jobs", json=TRAIN, headers={"Idempotency-Key": "retry-2"})
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert other.json()["id"] != first.json()["id"]
    ids = [job["id"] for job in client.get("/jobs", params={"limit": 500}).json()["data"]]
    assert sorted(ids) == sorted({first.json()["id"], other.json()["id"]})
    for job_id in set(ids):
        wait_for(client, job_id, TERMINAL)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "train", "base_model": "sd15"}, "training_name"),
        ({**TRAIN, "steps": 0}, "steps"),
        ({**TRAIN, "steps": "many"}, "steps"),
        ({**TRAIN, "unknown_knob": 1}, "unknown_knob"),
        ({"type": "bake_a_cake"}, "type"),
        ({"training_name": "faces"}, "type"),
        ({"type": "train_with_yaml"}, "yaml_config"),
        ([1, 2, 3], "body"),
    ],
)
def test_invalid_requests_are_422_naming_the_field(client: TestClient, body: Any, field: str) -> None:
    response = client.post("/jobs", json=body)
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["field"] == field
    assert error["error"].startswith(f"{field}: ")
    assert client.get("/jobs").json()["data"] == []  # nothing was queued


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post("/jobs", content=b'{"type": "train",', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["field"] == "body"


def test_unknown_dataset_is_refused_before_queueing(client: TestClient) -> None:
    response = client.post("/jobs", json={**TRAIN, "training_name": "no_such_set"})
    assert response.status_code in (404, 422)
    assert "training_name" in response.json()["error"]


def test_body_over_the_payload_limit_is_413(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, payload_limit_run_bytes=2000)
    with running_app(settings) as client:
        big = {**TRAIN, "default_caption": "x" * 900, "sample_prompts": ["y" * 900, "z" * 900]}
        response = client.post("/jobs", json=big)
        assert response.status_code == 413
        assert "limit of 2000 bytes" in response.json()["error"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit counts streamed bytes
            yield json.dumps(big).encode()

        response = client.post("/jobs", content=chunks(), headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert client.get("/jobs").json()["data"] == []


def test_without_ai_toolkit_trainings_are_503(tmp_path: Path) -> None:
    with running_app(make_settings(tmp_path, ai_toolkit_dir=None)) as client:
        response = client.post("/jobs", json=TRAIN)
        assert response.status_code == 503
        assert "AI_TOOLKIT_DIR" in response.json()["error"]


# ----- YAML upload


def yaml_config(workspace: Path, steps: int = 6) -> str:
    return (
        "job: extension\nconfig:\n  name: yaml_lora\n  process:\n    - type: sd_trainer\n"
        f"      training_folder: output\n      datasets:\n        - folder_path: {workspace}/training_data/faces\n"
        f"      train:\n        steps: {steps}\n      save:\n        save_every: 3\n"
        "      model:\n        name_or_path: runwayml/stable-diffusion-v1-5\n"
    )


def test_yaml_file_upload_as_multipart_and_as_raw_body(client: TestClient, settings: Settings) -> None:
    text = yaml_config(Path(settings.workspace).resolve())
    multipart = client.post("/jobs/yaml", files={"file": ("my.yaml", text.encode(), "application/x-yaml")})
    raw = client.post("/jobs/yaml", content=text.encode(), headers={"content-type": "application/x-yaml"})
    for response in (multipart, raw):
        assert response.status_code == 202, response.text
        job = wait_for(client, response.json()["id"], TERMINAL)
        assert job["status"] == "completed", job["error"]
        assert job["name"] == "yaml_lora"
        assert lora_of(job)["name"] == "yaml_lora.safetensors"


@pytest.mark.parametrize(
    ("content", "content_type", "status", "field"),
    [
        (b"", "application/x-yaml", 422, "yaml_config"),
        (b"\xff\xfe not utf-8", "application/x-yaml", 422, "yaml_config"),
        (b"job: [unclosed", "application/x-yaml", 422, None),
        (b'{"type": "train"}', "application/json", 422, "Content-Type"),
        (b"x" * 3000, "application/x-yaml", 413, "yaml_config"),
    ],
)
def test_bad_yaml_uploads(tmp_path: Path, content: bytes, content_type: str, status: int, field: str | None) -> None:
    with running_app(make_settings(tmp_path, max_yaml_bytes=2048)) as client:
        response = client.post("/jobs/yaml", content=content, headers={"content-type": content_type})
        assert response.status_code == status, response.text
        if field:
            assert response.json()["field"] == field
        assert client.get("/jobs").json()["data"] == []


def test_yaml_multipart_without_file_field_is_422(client: TestClient) -> None:
    response = client.post("/jobs/yaml", data={"other": "x"}, files={"nope": ("a.yaml", b"job: x", "text/yaml")})
    assert response.status_code == 422
    assert response.json()["field"] == "file"


def test_oversized_yaml_file_in_multipart_is_413(tmp_path: Path) -> None:
    with running_app(make_settings(tmp_path, max_yaml_bytes=1024)) as client:
        response = client.post("/jobs/yaml", files={"file": ("big.yaml", b"a: " + b"b" * 5000, "text/yaml")})
        assert response.status_code == 413


# ----- reading


def test_get_finished_job_has_progress_and_artifact_urls(client: TestClient, finished: dict[str, Any]) -> None:
    job = client.get(f"/jobs/{finished['id']}").json()
    assert job["progress"]["step"] == job["progress"]["total_steps"] == 12
    assert job["progress"]["percent"] == 100.0
    assert job["finished_at"] and job["exit_code"] == 0 and job["error"] is None
    kinds = {a["kind"] for a in job["artifacts"]}
    assert {"lora", "checkpoint", "sample", "config", "log"} <= kinds
    for artifact in job["artifacts"]:
        assert artifact["url"] == f"/jobs/{job['id']}/artifacts/{artifact['name']}"


def test_unknown_job_is_404_everywhere(client: TestClient) -> None:
    for method, path in [
        ("GET", "/jobs/train_000000000000"),
        ("POST", "/jobs/train_000000000000/cancel"),
        ("DELETE", "/jobs/train_000000000000"),
        ("GET", "/jobs/train_000000000000/logs"),
        ("GET", "/jobs/train_000000000000/events"),
        ("GET", "/jobs/train_000000000000/artifacts"),
        ("GET", "/jobs/train_000000000000/artifacts/x.safetensors"),
    ]:
        response = client.request(method, path)
        assert response.status_code == 404, (method, path, response.text)
        assert "train_000000000000" in response.json()["error"]


def test_list_is_newest_first_filtered_and_paged_stably(client: TestClient) -> None:
    ids = []
    for _ in range(5):
        ids.append(client.post("/jobs", json={**TRAIN, "steps": 1}).json()["id"])
        time.sleep(0.01)
    first = client.get("/jobs", params={"limit": 2}).json()
    assert [job["id"] for job in first["data"]] == ids[::-1][:2]
    # A job queued between two page reads must not shift the later pages.
    late = client.post("/jobs", json={**TRAIN, "steps": 1}).json()["id"]
    second = client.get("/jobs", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    third = client.get("/jobs", params={"limit": 2, "cursor": second["next_cursor"]}).json()
    assert [job["id"] for job in second["data"]] == ids[::-1][2:4]
    assert [job["id"] for job in third["data"]] == ids[::-1][4:]
    assert third["next_cursor"] is None
    for job_id in [*ids, late]:
        wait_for(client, job_id, TERMINAL)
    completed = client.get("/jobs", params={"status": "completed", "type": "train", "limit": 500}).json()["data"]
    assert {job["id"] for job in completed} == {*ids, late}
    assert client.get("/jobs", params={"type": "generate"}).json()["data"] == []


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"status": "sleeping"}, "status"),
        ({"type": "x"}, "type"),
        ({"limit": 0}, "limit"),
        ({"cursor": "not-a-cursor"}, "cursor"),
    ],
)
def test_list_rejects_bad_filters(client: TestClient, params: dict[str, Any], field: str) -> None:
    response = client.get("/jobs", params=params)
    assert response.status_code == 422
    assert response.json()["field"] == field


def test_logs_whole_tail_and_incremental(client: TestClient, finished: dict[str, Any], settings: Settings) -> None:
    on_disk = (Path(settings.workspace) / finished["log_path"]).read_bytes()
    whole = client.get(f"/jobs/{finished['id']}/logs")
    assert whole.status_code == 200 and whole.headers["content-type"].startswith("text/plain")
    assert "\r" not in whole.text and "\r" in on_disk.decode()  # bar redraws collapsed
    assert any("12/12" in line for line in whole.text.splitlines())
    assert whole.headers["x-next-offset"] == str(len(on_disk))
    assert whole.headers["x-job-status"] == "completed"
    tail = client.get(f"/jobs/{finished['id']}/logs", params={"tail": 3}).text.splitlines()
    assert tail == whole.text.splitlines()[-3:]
    # Two incremental reads cover the log exactly once.
    half = len(on_disk) // 2
    cut = on_disk.rfind(b"\n", 0, half) + 1
    part1 = client.get(f"/jobs/{finished['id']}/logs", params={"offset": 0})
    part2 = client.get(f"/jobs/{finished['id']}/logs", params={"offset": cut})
    assert part1.text == whole.text
    assert whole.text.endswith(part2.text)
    assert client.get(f"/jobs/{finished['id']}/logs", params={"offset": len(on_disk) + 5}).status_code == 422


# ----- artifacts


def test_artifact_download_range_etag_and_types(
    client: TestClient, finished: dict[str, Any], settings: Settings
) -> None:
    job_id = finished["id"]
    listed = client.get(f"/jobs/{job_id}/artifacts").json()["data"]
    lora = next(a for a in listed if a["kind"] == "lora")
    on_disk = (Path(settings.workspace) / lora["path"]).read_bytes()
    response = client.get(lora["url"])
    assert response.status_code == 200
    assert response.content == on_disk
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.headers["accept-ranges"] == "bytes"
    etag = response.headers["etag"]
    assert client.get(lora["url"], headers={"If-None-Match": etag}).status_code == 304
    part = client.get(lora["url"], headers={"Range": "bytes=8-99"})
    assert part.status_code == 206
    assert part.content == on_disk[8:100]
    assert part.headers["content-range"] == f"bytes 8-99/{len(on_disk)}"
    sample = next(a for a in listed if a["kind"] == "sample")
    assert "/samples/" in sample["url"]
    assert client.get(sample["url"]).headers["content-type"].startswith("image/")
    config = next(a for a in listed if a["kind"] == "config")
    assert client.get(config["url"]).headers["content-type"].startswith("text/yaml")
    log = next(a for a in listed if a["kind"] == "log")
    assert client.get(log["url"]).headers["content-type"].startswith("text/plain")


def test_unknown_artifact_and_escapes_are_404(client: TestClient, finished: dict[str, Any]) -> None:
    for name in ["nope.safetensors", "..%2F..%2Florapod.db", "%2e%2e/%2e%2e/lorapod.db", "samples"]:
        response = client.get(f"/jobs/{finished['id']}/artifacts/{name}")
        assert response.status_code == 404, name
        assert response.json()["field"] == "name"


# ----- events


def test_events_stream_to_the_end(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.05")  # slow enough that the stream sees it run
    job_id = client.post("/jobs", json=TRAIN).json()["id"]
    with client.stream("GET", f"/jobs/{job_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = parse_sse(response.read().decode())
    names = [event["event"] for event in events]
    assert names[0] == "status" and events[0]["data"]["id"] == job_id
    assert names[-1] == "end" and events[-1]["data"]["status"] == "completed"
    assert names[-2] == "status" and events[-2]["data"]["status"] == "completed"
    assert "log" in names and "artifact" in names
    seqs = [int(event["id"].split("-")[0]) for event in events]
    assert seqs == list(range(1, len(events) + 1))
    offsets = [int(event["id"].split("-")[1]) for event in events]
    assert offsets == sorted(offsets)
    new_artifacts = {event["data"]["name"] for event in events if event["event"] == "artifact"}
    assert f"{events[-2]['data']['name']}.safetensors" in new_artifacts
    log_lines = [line for event in events if event["event"] == "log" for line in event["data"]["lines"]]
    assert log_lines == client.get(f"/jobs/{job_id}/logs").text.splitlines()


def test_events_resume_after_last_event_id_without_repeating_log_lines(
    client: TestClient, finished: dict[str, Any]
) -> None:
    url = f"/jobs/{finished['id']}/events"
    events = parse_sse(client.get(url).text)
    log_events = [event for event in events if event["event"] == "log"]
    assert log_events, "a finished job's log is replayed"
    all_lines = [line for event in log_events for line in event["data"]["lines"]]
    resumed = parse_sse(client.get(url, headers={"Last-Event-ID": log_events[0]["id"]}).text)
    resumed_lines = [line for event in resumed if event["event"] == "log" for line in event["data"]["lines"]]
    assert resumed_lines == all_lines[len(log_events[0]["data"]["lines"]) :]
    assert int(resumed[0]["id"].split("-")[0]) == int(log_events[0]["id"].split("-")[0]) + 1
    assert resumed[0]["event"] == "status" and resumed[-1]["event"] == "end"
    # A foreign id starts over rather than failing.
    assert parse_sse(client.get(url, headers={"Last-Event-ID": "garbage"}).text)[0]["id"] == "1-0"


# ----- cancel and delete


def test_cancel_running_then_409_and_delete_with_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.5")
    settings = make_settings(tmp_path)
    with running_app(settings) as client:
        job_id = client.post("/jobs", json={**TRAIN, "steps": 200}).json()["id"]
        queued = client.post("/jobs", json={**TRAIN, "steps": 200}).json()["id"]  # one slot: it waits
        wait_for(client, job_id, {"running"})
        assert client.delete(f"/jobs/{job_id}").status_code == 409  # cancel first
        deadline = time.monotonic() + 30
        while client.get(f"/jobs/{job_id}").json()["progress"]["step"] < 1:  # past the trainer's start-up
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cancelled_queued = client.post(f"/jobs/{queued}/cancel")
        assert cancelled_queued.status_code == 202 and cancelled_queued.json()["status"] == "cancelled"
        response = client.post(f"/jobs/{job_id}/cancel")
        assert response.status_code == 202 and response.json()["cancel_requested"] is True
        job = wait_for(client, job_id, TERMINAL, timeout=30)
        assert job["status"] == "cancelled"
        again = client.post(f"/jobs/{job_id}/cancel")
        assert again.status_code == 409 and again.json()["field"] == "job_id"
        output = Path(settings.workspace) / job["output_dir"]
        log = Path(settings.workspace) / job["log_path"]
        assert output.is_dir() and log.is_file()
        assert client.delete(f"/jobs/{job_id}", params={"files": "true"}).status_code == 204
        assert not output.exists() and not log.exists()
        assert client.get(f"/jobs/{job_id}").status_code == 404
        assert client.delete(f"/jobs/{queued}").status_code == 204
        assert client.get("/jobs").json()["data"] == []


def test_delete_without_files_keeps_the_output(
    client: TestClient, finished: dict[str, Any], settings: Settings
) -> None:
    assert client.delete(f"/jobs/{finished['id']}").status_code == 204
    assert (Path(settings.workspace) / lora_of(finished)["path"]).is_file()
    assert client.get(f"/jobs/{finished['id']}").status_code == 404
