"""The stock runpod client against a real uvicorn server: all fourteen types through /v2/{endpoint_id}/...

runpod 1.12 reads `RUNPOD_ENDPOINT_BASE_URL` once, at import, into `runpod.endpoint_url_base`; but each
`RunPodClient` (made by `runpod.Endpoint`) reads that module attribute when it is constructed. So setting
`runpod.endpoint_url_base` (and `runpod.api_key`) before making the Endpoint points the unchanged client at
the test server, with no subprocess or module reload.
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from core.settings import Settings
from tests.helpers import LiveServer, make_settings

API_KEY = "test-api-key"
TRAIN = {"type": "train", "training_name": "faces", "base_model": "sd15", "trigger_word": "sks", "save_every": 5}
YAML_CONFIG = """\
job: extension
config:
  name: yaml_lora
  process:
    - type: sd_trainer
      training_folder: output
      datasets:
        - folder_path: training_data/faces
          caption_ext: txt
      network: {type: lora, linear: 4, linear_alpha: 4}
      save: {save_every: 4}
      train: {steps: 8, batch_size: 1, lr: 0.0001}
      model: {name_or_path: runwayml/stable-diffusion-v1-5}
"""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """The shared settings plus an API key, so every call is authenticated as on the cloud."""
    return make_settings(tmp_path, api_key=API_KEY)


@pytest.fixture
def endpoint(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The stock client's Endpoint, pointed at the live server."""
    import runpod

    monkeypatch.setattr(runpod, "api_key", API_KEY)
    monkeypatch.setattr(runpod, "endpoint_url_base", f"{live_server.url}/v2")
    return runpod.Endpoint("lorapod-endpoint")


@pytest.fixture
def api(live_server: LiveServer) -> Iterator[httpx.Client]:
    """Raw HTTP to /v2/lorapod-endpoint, for what the stock client hides (errors, retry, shapes)."""
    with httpx.Client(
        base_url=f"{live_server.url}/v2/lorapod-endpoint", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60
    ) as client:
        yield client


def png_bytes(index: int) -> bytes:
    """A small real PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (30 * index % 256, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    """Base64 text of data."""
    return base64.b64encode(data).decode()


def fetch_chunks(call: Callable[[dict[str, Any]], Any], request: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    """Ask for chunk after chunk (offset = next_offset) until done; the bytes and the last chunk."""
    data = b""
    offset = 0
    chunks = 0
    while True:
        chunk = call({**request, "offset": offset})
        assert chunk["offset"] == offset and chunk["length"] == len(base64.b64decode(chunk["content"]))
        data += base64.b64decode(chunk["content"])
        chunks += 1
        if chunk["done"]:
            assert chunk["next_offset"] is None and len(data) == chunk["size"]
            return data, {**chunk, "chunks": chunks}
        offset = chunk["next_offset"]


def until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until condition is truthy."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def test_stock_client_walks_all_fourteen_types(
    endpoint: Any, api: httpx.Client, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace = live_server.service.workspace.root
    health = endpoint.run_sync({"type": "health"}, timeout=60)
    assert health["database"]["ok"] is True and health["ai_toolkit"]["found"] is True

    # upload_training_data: real PNGs and captions as base64
    images = {f"img_{i}.png": png_bytes(i) for i in range(3)}
    files = [{"filename": n, "content": b64(d), "content_type": "image/png"} for n, d in images.items()]
    files += [{"filename": f"img_{i}.txt", "content": b64(f"a photo of sks {i}".encode())} for i in range(2)]
    summary = endpoint.run_sync({"type": "upload_training_data", "training_name": "faces", "files": files}, timeout=60)
    assert summary["images"] == 3 and summary["captions"] == 2
    assert summary["images_without_caption"] == ["img_2.png"]
    assert (workspace / "training_data" / "faces" / "img_0.png").read_bytes() == images["img_0.png"]

    # train from parameters, waiting inside the call: progress while it runs, then the finished process
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.05")
    job = endpoint.run({**TRAIN, "steps": 40})
    updates = list(job.stream())
    assert job.status() == "COMPLETED"
    running = [u for u in updates if u["status"] == "running"]
    assert running and running[-1]["step"] > 0 and running[-1]["total_steps"] == 40
    process = job.output()
    train_id = process["id"]
    assert process["status"] == "completed" and process["process_error"] is None
    assert {u["process_id"] for u in updates} == {train_id}
    raw = api.get(f"/status/{job.job_id}").json()
    assert raw["status"] == "COMPLETED" and raw["executionTime"] > 0 and raw["output"]["id"] == train_id

    # train from YAML without waiting: the process id at once, then follow it with process_status
    started = endpoint.run_sync({"type": "train_with_yaml", "yaml_config": YAML_CONFIG, "wait": False}, timeout=60)
    yaml_id = started["process_id"]
    assert started["status"] == "queued" and yaml_id.startswith("train_")
    finished = until(
        lambda: (
            (s := endpoint.run_sync({"type": "process_status", "process_id": yaml_id}, timeout=60))["status"]
            in ("completed", "failed")
            and s
        ),
        60,
        "the YAML training",
    )
    assert finished["status"] == "completed", finished["process_error"]

    listed = endpoint.run_sync({"type": "processes", "job_type": "train", "limit": 1}, timeout=60)
    assert [p["id"] for p in listed["processes"]] == [yaml_id] and listed["next_cursor"]
    page2 = endpoint.run_sync({"type": "processes", "limit": 1, "cursor": listed["next_cursor"]}, timeout=60)
    assert [p["id"] for p in page2["processes"]] == [train_id]

    loras = endpoint.run_sync({"type": "lora"}, timeout=60)["loras"]
    final_lora = next(entry for entry in loras if entry["process_id"] == train_id and entry["final"])
    models = endpoint.run_sync({"type": "list_models"}, timeout=60)
    assert final_lora["path"] in {entry["path"] for entry in models["loras"]} and "base_models" in models

    found = endpoint.run_sync(
        {"type": "list_files", "directory": f"output/{train_id}", "pattern": "*.safetensors"}, timeout=60
    )["files"]
    assert final_lora["path"] in {f["path"] for f in found} and all(f["kind"] == "model" for f in found)

    # download_file and download, reassembled from several small chunks, byte for byte
    on_disk = (workspace / final_lora["path"]).read_bytes()
    run_sync = lambda payload: endpoint.run_sync(payload, timeout=60)  # noqa: E731
    data, last = fetch_chunks(run_sync, {"type": "download_file", "file_path": final_lora["path"], "length": 500})
    assert data == on_disk and last["chunks"] > 2 and last["sha256"] == hashlib.sha256(on_disk).hexdigest()
    data, last = fetch_chunks(run_sync, {"type": "download", "process_id": train_id, "length": 700})
    assert data == on_disk and last["kind"] == "lora" and last["chunks"] > 1

    # bulk_download of the process: one zip built on disk, fetched in chunks, unzipped and compared
    data, last = fetch_chunks(run_sync, {"type": "bulk_download", "process_id": train_id, "length": 2000})
    assert last["chunks"] > 1 and hashlib.sha256(data).hexdigest() == last["sha256"]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert final_lora["path"] in names and len(names) == last["files"]
        for name in names:
            assert archive.read(name) == (workspace / name).read_bytes()

    # cancel: a slow training started without waiting, cancelled with the contract's own type
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.5")
    slow = endpoint.run_sync({**TRAIN, "steps": 500, "wait": False}, timeout=60)["process_id"]
    until(
        lambda: endpoint.run_sync({"type": "process_status", "process_id": slow}, timeout=60)["status"] == "running",
        60,
        "the slow training to run",
    )
    cancelled = endpoint.run_sync({"type": "cancel", "process_id": slow}, timeout=60)
    assert cancelled["id"] == slow and cancelled["cancel_requested"] is True
    until(
        lambda: endpoint.run_sync({"type": "process_status", "process_id": slow}, timeout=60)["status"] == "cancelled",
        30,
        "the cancel",
    )

    health_now = endpoint.health()
    assert health_now["jobs"]["completed"] >= 10 and health_now["workers"] == {"idle": 1, "running": 0}


def test_generate_is_what_a_prompt_without_type_means(endpoint: Any, api: httpx.Client) -> None:
    # No type but a prompt: a generate call; the answer names generate's own field rules.
    assert endpoint.run_sync({"prompt": "a cat", "width": 100}, timeout=60) is None  # the client drops FAILED
    call = api.post("/runsync", json={"input": {"prompt": "a cat", "width": 100}}).json()
    assert call["status"] == "FAILED" and call["error"] == "width: must be a multiple of 8"


@pytest.mark.slow
def test_generate_with_a_tiny_model(endpoint: Any, live_server: LiveServer) -> None:
    pytest.importorskip("diffusers")
    from tests.fakes.tiny_sd import build_tiny_sd15

    workspace = live_server.service.workspace
    build_tiny_sd15(workspace.models / "tiny-sd15")
    request = {
        "prompt": "a red square",
        "base_model": "models/tiny-sd15",
        "model_family": "sd15",
        "width": 64,
        "height": 64,
        "steps": 2,
        "seed": 7,
    }
    process = endpoint.run_sync(request, timeout=600)
    assert process is not None and process["status"] == "completed", process
    assert process["type"] == "generate"
    data, last = fetch_chunks(
        lambda payload: endpoint.run_sync(payload, timeout=60), {"type": "download", "process_id": process["id"]}
    )
    assert last["kind"] == "image"
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == (64, 64)


def test_run_status_and_failures_have_the_clouds_shapes(endpoint: Any, api: httpx.Client) -> None:
    queued = api.post("/run", json={"input": {"type": "no_such_type"}})
    assert queued.status_code == 200 and queued.json()["status"] == "IN_QUEUE"
    call_id = queued.json()["id"]
    final = until(lambda: (s := api.get(f"/status/{call_id}").json())["status"] == "FAILED" and s, 30, "FAILED")
    assert final["error"].startswith("type: unknown type 'no_such_type'; expected one of health,")
    assert "output" not in final and final["delayTime"] >= 0 and final["executionTime"] >= 0
    assert final["workerId"] == "test-worker"

    # the stock client: run_sync answers None for FAILED, and Job.output() drops the error
    assert endpoint.run_sync({"type": "process_status"}, timeout=60) is None
    job = endpoint.run({"type": "cancel", "process_id": "train_000000000000"})
    assert job.output(timeout=30) is None and job.status() == "FAILED"

    assert api.get("/status/unknown-id").status_code == 404
    assert api.get("/status/unknown-id").json()["error"].startswith("no request with id 'unknown-id'")
    assert api.post("/run", content=b"{not json").status_code == 400
    bad = api.post("/run", json={"nput": {"type": "health"}})
    assert bad.status_code == 400 and bad.json()["error"].startswith("input: is required")


def test_auth_is_required(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import runpod

    monkeypatch.setattr(runpod, "api_key", "wrong-key")
    monkeypatch.setattr(runpod, "endpoint_url_base", f"{live_server.url}/v2")
    with pytest.raises(RuntimeError, match="401 Unauthorized"):
        runpod.Endpoint("lorapod-endpoint").run_sync({"type": "health"}, timeout=30)
    assert httpx.get(f"{live_server.url}/v2/x/health").status_code == 401


def test_runpod_cancel_stops_the_process_it_waits_on(
    endpoint: Any, api: httpx.Client, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes.trainer import make_dataset

    make_dataset(live_server.service.workspace.training_data / "faces", 2)
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.5")
    job = endpoint.run({**TRAIN, "steps": 500})
    progress = until(
        lambda: (
            (s := api.get(f"/status/{job.job_id}").json())["status"] == "IN_PROGRESS"
            and s.get("output", {}).get("status") == "running"
            and s["output"]
        ),
        60,
        "the training to run inside the call",
    )
    answer = job.cancel()
    assert answer == {"id": job.job_id, "status": "CANCELLED"}
    service = live_server.service
    until(lambda: service.get(progress["process_id"]).status == "cancelled", 30, "the process to be cancelled")
    assert job.status() == "CANCELLED"
    # A cancelled call is not retried; a finished call is answered unchanged by another cancel.
    assert api.post(f"/retry/{job.job_id}").status_code == 409
    assert api.post(f"/cancel/{job.job_id}").json()["status"] == "CANCELLED"


def test_execution_timeout_times_out_the_call_and_stops_its_process(
    api: httpx.Client, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes.trainer import make_dataset

    make_dataset(live_server.service.workspace.training_data / "faces", 2)
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.5")
    policy = {"executionTimeout": 5000, "ttl": 60000}
    call = api.post("/run", json={"input": {**TRAIN, "steps": 500}, "policy": policy}).json()
    final = until(lambda: (s := api.get(f"/status/{call['id']}").json())["status"] == "TIMED_OUT" and s, 30, "timeout")
    assert final["error"] == "the request ran longer than its executionTimeout of 5000 ms"
    assert 5000 <= final["executionTime"] < 15000
    process_id = final["output"]["process_id"]  # the last progress stays, naming the process
    until(lambda: live_server.service.get(process_id).status == "cancelled", 30, "the process to be cancelled")

    for bad in ({"executionTimeout": 10}, {"executionTimeout": "5s"}, "fast"):
        refused = api.post("/run", json={"input": {"type": "health"}, "policy": bad})
        assert refused.status_code == 400 and refused.json()["error"].startswith("policy")


def test_retry_purge_and_health(api: httpx.Client, endpoint: Any, live_server: LiveServer) -> None:
    failed = api.post("/runsync", json={"input": {"type": "process_status", "process_id": "train_0123456789ab"}})
    call_id = failed.json()["id"]
    assert failed.json()["status"] == "FAILED" and call_id.startswith("sync-")
    retried = api.post(f"/retry/{call_id}")
    assert retried.json() == {"id": call_id, "status": "IN_QUEUE"}
    until(lambda: api.get(f"/status/{call_id}").json()["status"] == "FAILED", 30, "the retry to fail again")
    assert endpoint.health()["jobs"]["retried"] == 1

    upload = api.post(
        "/runsync",
        json={
            "input": {
                "type": "upload_training_data",
                "training_name": "x",
                "files": [{"filename": "a.png", "content": "!!!!"}],
            }
        },
    )
    assert upload.json()["status"] == "FAILED"
    refused = api.post(f"/retry/{upload.json()['id']}")
    assert refused.status_code == 409 and "contents are not kept" in refused.json()["error"]

    assert endpoint.purge_queue() == {"removed": 0, "status": "completed"}
    health = endpoint.health()
    assert health["jobs"]["failed"] == 2 and health["jobs"]["inQueue"] == 0


def test_purge_queue_drops_the_calls_waiting_for_a_slot(
    api: httpx.Client, endpoint: Any, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.calls.runner import CallRunner
    from tests.fakes.trainer import make_dataset

    make_dataset(live_server.service.workspace.training_data / "faces", 2)
    live_server.app.state.runpod_calls = CallRunner(live_server.service, concurrency=1)
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.5")
    busy = endpoint.run({**TRAIN, "steps": 500})
    until(lambda: busy.status() == "IN_PROGRESS", 30, "the first call to take the only slot")
    waiting = [api.post("/run", json={"input": {"type": "health"}}).json()["id"] for _ in range(2)]
    assert {api.get(f"/status/{i}").json()["status"] for i in waiting} == {"IN_QUEUE"}
    assert endpoint.health()["jobs"]["inQueue"] == 2 and endpoint.health()["workers"]["running"] == 1
    assert endpoint.purge_queue() == {"removed": 2, "status": "completed"}
    assert all(api.get(f"/status/{i}").status_code == 404 for i in waiting)
    assert busy.status() == "IN_PROGRESS"
    busy.cancel()


def test_runsync_wait_returns_the_current_state(
    endpoint: Any, api: httpx.Client, live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes.trainer import make_dataset

    make_dataset(live_server.service.workspace.training_data / "faces", 2)
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.1")
    early = api.post("/runsync", params={"wait": 1000}, json={"input": {**TRAIN, "steps": 40}}).json()
    assert early["status"] in ("IN_QUEUE", "IN_PROGRESS")
    final = until(lambda: (s := api.get(f"/status/{early['id']}").json())["status"] == "COMPLETED" and s, 60, "done")
    assert final["output"]["status"] == "completed"
    # Within /runsync's default wait, the stock client's run_sync gets the finished process in one answer.
    assert endpoint.run_sync({**TRAIN, "steps": 5}, timeout=120)["status"] == "completed"


def test_results_expire_as_configured(tmp_path: Path) -> None:
    server = LiveServer(make_settings(tmp_path, result_retention_runsync_seconds=0.5)).start()
    try:
        with httpx.Client(base_url=f"{server.url}/v2/e", timeout=30) as client:
            call = client.post("/runsync", json={"input": {"type": "lora"}}).json()
            assert client.get(f"/status/{call['id']}").json()["status"] == "COMPLETED"
            time.sleep(0.7)
            assert client.get(f"/status/{call['id']}").status_code == 404
    finally:
        server.stop()


def test_stored_calls_keep_no_file_contents_or_secrets(api: httpx.Client, live_server: LiveServer) -> None:
    from sqlmodel import Session, select

    from app.calls.store import Call

    content = b64(png_bytes(1))
    api.post(
        "/runsync",
        json={
            "input": {
                "type": "upload_training_data",
                "training_name": "faces",
                "hf_token": "hf_x",
                "files": [{"filename": "a.png", "content": content}],
            }
        },
    )
    with Session(live_server.service.engine) as session:
        stored = [call.input for call in session.exec(select(Call)).all()]
    assert stored and stored[0]["hf_token"] == "[redacted]"
    assert "content" not in stored[0]["files"][0] and stored[0]["files"][0]["content_chars"] == len(content)
    assert "hf_x" not in repr(stored) and content not in repr(stored)
