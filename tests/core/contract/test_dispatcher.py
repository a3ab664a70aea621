"""The dispatcher on a started service with the stand-in trainer: routing, waiting, progress, cancel, chunks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import itertools
import logging
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest

from core.contract.dispatcher import CONTRACT_TYPES, EXTENSION_TYPES, SEED_TYPES, ProgressReporter, dispatch
from core.contract.downloads import chunk_limit
from core.jobs.rows import Job, JobType
from core.jobs.service import JobService
from core.settings import Settings
from core.storage.files import max_raw_chunk
from tests.fakes.trainer import make_dataset
from tests.helpers import make_settings

TRAIN: dict[str, Any] = {"type": "train", "training_name": "faces", "base_model": "sd15", "save_every": 3}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Test settings with a small /run payload limit, so default chunks are small too."""
    return make_settings(tmp_path, payload_limit_run_bytes=64 * 1024 + 3000)


@pytest.fixture
def faces(service: JobService) -> Path:
    """A two-image dataset 'faces'."""
    return make_dataset(service.workspace.training_data / "faces", 2)


async def wait_status(service: JobService, job_id: str, status: str, timeout: float = 30) -> None:
    """Until the job reaches status."""
    deadline = time.monotonic() + timeout
    while service.get(job_id).status != status:
        assert time.monotonic() < deadline, f"{job_id} never became {status}"
        await asyncio.sleep(0.05)


def test_fourteen_types() -> None:
    assert len(SEED_TYPES) == len(set(SEED_TYPES)) == 14
    assert EXTENSION_TYPES == ("caption_dataset", "list_captions", "set_caption")
    assert len(set(CONTRACT_TYPES)) == 17 and set(SEED_TYPES) < set(CONTRACT_TYPES)


async def test_wait_false_returns_the_process_id_at_once(service: JobService, faces: Path) -> None:
    out = await dispatch(service, {**TRAIN, "steps": 5, "wait": False})
    assert out["status"] == "queued" and out["type"] == "train"
    assert service.get(out["process_id"]).params["training_name"] == "faces"
    # The dispatcher's default applies only when the payload says nothing; the payload's own wait wins.
    quick = await dispatch(service, {**TRAIN, "steps": 5}, wait=False)
    assert set(quick) == {"process_id", "status", "type"}
    waited = await dispatch(service, {**TRAIN, "steps": 5, "wait": True}, wait=False)
    assert waited["status"] == "completed"
    assert (await dispatch(service, {**TRAIN, "wait": "yes"}))["error"] == "wait: must be true or false"


async def test_waiting_reports_throttled_progress_and_returns_the_finished_process(
    service: JobService, faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.05")
    seen: list[tuple[float, dict[str, Any]]] = []
    out = await dispatch(service, {**TRAIN, "steps": 30}, progress=lambda p: seen.append((time.monotonic(), p)))

    assert out["status"] == "completed" and "error" not in out and out["process_error"] is None
    assert out["progress"]["step"] == 30 and any(a["kind"] == "lora" for a in out["artifacts"])
    statuses = [p["status"] for _, p in seen]
    assert statuses[0] == "queued" and "running" in statuses
    assert "completed" not in statuses  # the result carries the end, never a late progress update
    assert {p["process_id"] for _, p in seen} == {out["id"]}
    # Within one status, updates are at least the configured interval apart.
    interval = service.settings.progress_interval_seconds
    for (t0, p0), (t1, p1) in itertools.pairwise(seen):
        if p0["status"] == p1["status"]:
            assert t1 - t0 >= interval * 0.99
    steps = [p["step"] for _, p in seen if p["status"] == "running"]
    assert steps == sorted(steps) and steps[-1] > 0


def test_progress_reporter_throttles_within_a_status_and_never_reports_the_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [100.0]
    monkeypatch.setattr("core.contract.dispatcher.time.monotonic", lambda: clock[0])
    sent: list[tuple[str, int]] = []
    reporter = ProgressReporter(lambda p: sent.append((p["status"], p["step"])), interval=1.0)

    def job(status: str, step: int) -> Job:
        return Job(id="train_0123456789ab", type=JobType.train, status=status, name="x", step=step, total_steps=9)

    reporter(job("queued", 0))
    reporter(job("running", 1))  # a new status goes out at once
    reporter(job("running", 2))  # too soon
    clock[0] += 0.5
    reporter(job("running", 3))  # still too soon
    clock[0] += 0.6
    reporter(job("running", 4))
    reporter(job("completed", 9))  # the call's result says this
    assert sent == [("queued", 0), ("running", 1), ("running", 4)]


async def test_a_failed_training_fails_the_call_but_not_a_status_query(
    service: JobService, faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_FAIL_AT_STEP", "7")
    out = await dispatch(service, {**TRAIN, "steps": 20})
    assert out["status"] == "failed"
    assert out["error"].startswith(f"process {out['id']} failed: ") and out["process_error"]
    status = await dispatch(service, {"type": "process_status", "process_id": out["id"]})
    assert "error" not in status and status["process_error"] == out["process_error"]
    # No final LoRA: download falls back to the newest checkpoint.
    chunk = await dispatch(service, {"type": "download", "process_id": out["id"]})
    assert chunk["kind"] == "checkpoint" and chunk["artifact"].endswith("_000000006.safetensors")


async def test_cancelling_the_waiting_task_stops_the_trainer_then_reraises(
    service: JobService, faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.5")
    updates: list[dict[str, Any]] = []
    task = asyncio.create_task(dispatch(service, {**TRAIN, "steps": 500}, progress=updates.append))
    while not any(u["status"] == "running" for u in updates):
        await asyncio.sleep(0.05)
    job_id = updates[0]["process_id"]
    while service.get(job_id).pid is None:
        await asyncio.sleep(0.05)
    pid = service.get(job_id).pid
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # By the time the CancelledError comes out, the job is over and its trainer is gone.
    assert service.get(job_id).status == "cancelled"
    assert not Path(f"/proc/{pid}").exists()


async def test_without_stop_on_cancel_the_process_outlives_the_call(
    service: JobService, faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.5")
    updates: list[dict[str, Any]] = []
    task = asyncio.create_task(
        dispatch(service, {**TRAIN, "steps": 500}, progress=updates.append, stop_on_cancel=False)
    )
    while not updates:
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    job_id = updates[0]["process_id"]
    await wait_status(service, job_id, "running")
    cancelled = await dispatch(service, {"type": "cancel", "process_id": job_id})
    assert cancelled["cancel_requested"] is True and "error" not in cancelled
    await wait_status(service, job_id, "cancelled")
    again = await dispatch(service, {"type": "cancel", "process_id": job_id})
    assert again["error"] == f"process_id: job '{job_id}' has already finished (cancelled)"


async def test_no_type_but_a_prompt_means_generate(service: JobService) -> None:
    # Routed to generate's own rules (no generation needs to run to prove the routing).
    assert (await dispatch(service, {"prompt": "a cat", "steps": 1000}))["error"] == (
        "steps: input should be less than or equal to 150"
    )
    assert (await dispatch(service, {"prompts": ["a", " "]}))["error"].startswith("prompts: every prompt")
    assert (await dispatch(service, {"negative_prompt": "x"}))["error"].startswith("type: is required")


async def test_listings(service: JobService, faces: Path) -> None:
    first = await dispatch(service, {**TRAIN, "steps": 4})
    second = await dispatch(service, {**TRAIN, "steps": 4, "name": "other"})
    page = await dispatch(service, {"type": "processes", "limit": 1})
    assert [p["id"] for p in page["processes"]] == [second["id"]] and page["next_cursor"]
    rest = await dispatch(service, {"type": "processes", "cursor": page["next_cursor"]})
    assert [p["id"] for p in rest["processes"]] == [first["id"]] and rest["next_cursor"] is None
    assert (await dispatch(service, {"type": "processes", "status": "failed"}))["processes"] == []

    loras = (await dispatch(service, {"type": "lora"}))["loras"]
    assert {(entry["process_id"], entry["name"]) for entry in loras if entry["final"]} == {
        (first["id"], "faces.safetensors"),
        (second["id"], "other.safetensors"),
    }
    models = await dispatch(service, {"type": "list_models"})
    assert models["loras"] == loras and isinstance(models["base_models"], list)
    files = (await dispatch(service, {"type": "list_files", "directory": "training_data", "pattern": "*.PNG"}))["files"]
    assert [f["path"] for f in files] == ["training_data/faces/img_0.png", "training_data/faces/img_1.png"]
    health = await dispatch(service, {"type": "health"})
    assert health["database"]["ok"] is True and health["jobs"]["completed"] == 2


async def test_download_file_default_chunks_fit_the_payload_limit(service: JobService) -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    (service.workspace.output / "blob.bin").write_bytes(data)
    limit = chunk_limit(service)
    assert limit == max_raw_chunk(service.settings.payload_limit_run_bytes) < len(data)
    first = await dispatch(service, {"type": "download_file", "file_path": "output/blob.bin"})
    assert first["length"] == limit and first["next_offset"] == limit and first["done"] is False
    assert first["sha256"] == hashlib.sha256(data).hexdigest() and first["size"] == len(data)
    # An absolute path under the seed's /workspace names the same file.
    last = await dispatch(
        service, {"type": "download_file", "file_path": "/workspace/output/blob.bin", "offset": len(data) - 10}
    )
    assert base64.b64decode(last["content"]) == data[-10:] and last["done"] is True and last["next_offset"] is None


async def test_download_named_artifacts_and_refusals(service: JobService, faces: Path) -> None:
    job = await dispatch(service, {**TRAIN, "steps": 7, "sample_every": 3, "sample_prompts": ["a photo of sks"]})
    sample = next(a["name"] for a in job["artifacts"] if a["kind"] == "sample")
    chunk = await dispatch(service, {"type": "download", "process_id": job["id"], "artifact": sample})
    assert chunk["kind"] == "sample" and chunk["artifact"] == sample and chunk["done"] is True
    missing = await dispatch(service, {"type": "download", "process_id": job["id"], "artifact": "nope.png"})
    assert missing["error"] == f"artifact: process '{job['id']}' has no artifact named 'nope.png'"
    (service.workspace.output / ".secret").write_text("hidden")
    for path in ("lorapod.db", "output/.secret"):
        refused = await dispatch(service, {"type": "download_file", "file_path": path})
        assert refused["error"] == "file_path: no such file in the workspace"


async def test_bulk_download_zips_once_on_disk_from_each_source(service: JobService, faces: Path) -> None:
    workspace = service.workspace
    out = await dispatch(service, {"type": "bulk_download", "directory": "training_data/faces"})
    archive = workspace.root / out["file_path"]
    assert archive.parent == workspace.output / "bundles" and out["files"] == 4 and out["done"] is True
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(out["content"]))) as zipped:
        assert sorted(zipped.namelist()) == sorted(f"training_data/faces/{p.name}" for p in faces.iterdir())
        assert zipped.read("training_data/faces/img_0.txt") == (faces / "img_0.txt").read_bytes()
    built = archive.stat().st_mtime_ns
    again = await dispatch(service, {"type": "bulk_download", "directory": "training_data/faces", "offset": 10})
    assert again["file_path"] == out["file_path"] and archive.stat().st_mtime_ns == built  # served, not rebuilt

    picked = await dispatch(service, {"type": "bulk_download", "file_paths": ["training_data/faces/img_1.png"]})
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(picked["content"]))) as zipped:
        assert zipped.namelist() == ["training_data/faces/img_1.png"]
    two = await dispatch(service, {"type": "bulk_download", "directory": "output", "file_paths": ["x"]})
    assert two["error"] == "directory: give exactly one of file_paths, directory or process_id"
    hidden = await dispatch(service, {"type": "bulk_download", "file_paths": ["lorapod.db"]})
    assert hidden["error"] == "file_paths[0]: no such file in the workspace"


async def test_upload_accepts_data_urls_and_reports_skips(service: JobService) -> None:
    text = (Path(__file__).parents[2] / "fakes" / "ai_toolkit" / "run.py").read_bytes()  # named .png, not an image
    files = [
        {"filename": "notes.png", "content": base64.b64encode(text).decode()},
        {"filename": "a.txt", "content": "data:text/plain;base64," + base64.b64encode(b"a caption").decode()},
    ]
    out = await dispatch(service, {"type": "upload_training_data", "training_name": "mixed", "files": files})
    assert out["saved"] == ["a.txt"] and out["captions"] == 1 and out["images"] == 0
    assert [s["filename"] for s in out["skipped"]] == ["notes.png"]


async def test_an_unexpected_failure_is_an_internal_error_with_a_logged_traceback(
    service: JobService, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(_service: object, _data: object) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("core.contract.dispatcher._HANDLERS", {"health": boom})
    with caplog.at_level(logging.ERROR, logger="lorapod.dispatcher"):
        out = await dispatch(service, {"type": "health"})
    assert out == {"error": "internal error: RuntimeError: disk on fire"}
    assert any(record.exc_info for record in caplog.records)
