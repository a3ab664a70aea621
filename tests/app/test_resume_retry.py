"""Resume and retry over a real uvicorn server: a new linked attempt from the newest intact checkpoint (a truncated
one skipped), a failed job from scratch, `resume_from` on the contract, and a job a dead trainer left behind."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.fakes.trainer import make_dataset
from tests.helpers import LiveServer

TRAIN: dict[str, Any] = {
    "type": "train",
    "training_name": "faces",
    "base_model": "sd15",
    "steps": 40,
    "save_every": 4,
    "trigger_word": "sks",
}
TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture(autouse=True)
def faces(settings: Settings) -> None:
    make_dataset(Path(settings.workspace) / "training_data" / "faces", 2)


def poll(
    http: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/jobs/{job_id}").json()
        if until(job):
            return job
        assert time.monotonic() < deadline, f"{job_id}: still {job['status']} {job['progress']}"
        time.sleep(0.05)


def ended(job: dict[str, Any]) -> bool:
    return job["status"] in TERMINAL


def log_of(http: httpx.Client, job_id: str) -> str:
    return http.get(f"/jobs/{job_id}/logs").text


def test_a_full_disk_truncates_the_newest_checkpoint_and_the_resume_skips_it(
    http: httpx.Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_ENOSPC_AT_STEP", "8")
    first = poll(http, http.post("/jobs", json=TRAIN).json()["id"], ended)
    assert first["status"] == "failed"
    assert "No space left on device" in first["error"]  # the trainer's own words, kept on the record
    assert first["params"]["steps"] == 40 and http.get("/health").status_code == 200
    save_root = Path(settings.workspace) / first["output_dir"] / first["name"]
    truncated = save_root / f"{first['name']}_000000008.safetensors"
    before = truncated.read_bytes()
    monkeypatch.delenv("FAKE_AITK_ENOSPC_AT_STEP")

    answer = http.post(f"/jobs/{first['id']}/resume")
    assert answer.status_code == 202, answer.text
    second = answer.json()
    assert second["resumed_from"] == first["id"] and second["id"] != first["id"]
    assert answer.headers["Location"].endswith(second["id"])
    assert any("_000000004.safetensors (step 4)" in w for w in second["warnings"])
    assert any("skipped" in w and "_000000008" in w for w in second["warnings"])
    done = poll(http, second["id"], ended)
    assert done["status"] == "completed", done["error"]
    assert done["progress"]["total_steps"] == 40
    log = log_of(http, second["id"])
    assert "Found step 4 in metadata, starting from there" in log
    assert any(a["kind"] == "lora" for a in done["artifacts"])
    assert truncated.read_bytes() == before  # the old attempt's files are left as they were


def test_cancel_with_save_then_resume_continues_from_that_checkpoint(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.02")
    job = http.post("/jobs", json={**TRAIN, "steps": 600, "save_every": 600}).json()
    poll(http, job["id"], lambda j: j["status"] == "running" and j["progress"]["step"] >= 5)
    http.post(f"/jobs/{job['id']}/cancel", params={"save": "true"})
    cancelled = poll(http, job["id"], ended)
    assert cancelled["status"] == "cancelled"
    step = cancelled["resumable_from_step"]
    assert isinstance(step, int) and step >= 5
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.0005")
    resumed = http.post(f"/jobs/{job['id']}/resume").json()
    assert resumed["progress"]["step"] == step
    done = poll(http, resumed["id"], ended, timeout=120)
    assert done["status"] == "completed", done["error"]
    assert f"Found step {step} in metadata" in log_of(http, resumed["id"])


def test_resume_is_refused_where_it_cannot_work(http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    completed = poll(http, http.post("/jobs", json={**TRAIN, "steps": 5}).json()["id"], ended)
    refused = http.post(f"/jobs/{completed['id']}/resume")
    assert refused.status_code == 409 and "nothing is left to train" in refused.json()["error"]
    assert completed["resumable_from_step"] is None
    monkeypatch.setenv("FAKE_AITK_FAIL_AT_STEP", "2")
    early = poll(http, http.post("/jobs", json=TRAIN).json()["id"], ended)
    assert early["status"] == "failed" and early["resumable_from_step"] is None
    none_saved = http.post(f"/jobs/{early['id']}/resume")
    assert none_saved.status_code == 409 and "retry" in none_saved.json()["error"]
    assert http.post("/jobs/train_ffffffffffff/resume").status_code == 404


def test_retry_starts_a_failed_job_again_from_scratch(http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AITK_FAIL_AT_STEP", "6")
    failed = poll(http, http.post("/jobs", json=TRAIN).json()["id"], ended)
    assert failed["status"] == "failed"
    monkeypatch.delenv("FAKE_AITK_FAIL_AT_STEP")
    again = http.post(f"/jobs/{failed['id']}/retry", headers={"Idempotency-Key": "retry-once"})
    same = http.post(f"/jobs/{failed['id']}/retry", headers={"Idempotency-Key": "retry-once"})
    assert again.status_code == same.status_code == 202 and again.json()["id"] == same.json()["id"]
    retried = again.json()
    assert retried["retried_from"] == failed["id"] and retried["output_dir"] != failed["output_dir"]
    done = poll(http, retried["id"], ended)
    assert done["status"] == "completed", done["error"]
    assert "RESUMING" not in log_of(http, retried["id"])
    completed_retry = http.post(f"/jobs/{done['id']}/retry")
    assert completed_retry.status_code == 409


def test_contract_resume_from(http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AITK_FAIL_AT_STEP", "10")
    failed = poll(http, http.post("/jobs", json=TRAIN).json()["id"], ended)
    monkeypatch.delenv("FAKE_AITK_FAIL_AT_STEP")
    mixed = http.post("/v2/ep/runsync", json={"input": {"type": "train", "resume_from": failed["id"], "steps": 9}})
    assert mixed.json()["status"] == "FAILED" and mixed.json()["error"].startswith("steps: cannot be combined")
    call = http.post("/v2/ep/runsync", json={"input": {"type": "train", "resume_from": failed["id"]}}).json()
    assert call["status"] == "COMPLETED", call
    assert call["output"]["resumed_from"] == failed["id"] and call["output"]["status"] == "completed"
    missing = http.post("/v2/ep/runsync", json={"input": {"type": "train_with_yaml", "resume_from": "train_0"}})
    assert missing.json()["status"] == "FAILED" and "no job" in missing.json()["error"]


def test_a_job_a_dead_trainer_left_behind_says_how_far_it_got_and_resumes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.02")
    server = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=server.url, timeout=60) as http:
            job = http.post("/jobs", json={**TRAIN, "steps": 600, "save_every": 10}).json()
            running = poll(http, job["id"], lambda j: any(a["kind"] == "checkpoint" for a in j["artifacts"]))
    finally:
        server.stop()
    os.killpg(_pid_of(settings, running["id"]), signal.SIGKILL)  # the pod restarted: the trainer died too
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.0005")
    again = LiveServer(settings).start()
    try:
        with httpx.Client(base_url=again.url, timeout=60) as http:
            left = poll(http, job["id"], ended)
            assert left["status"] == "failed"
            step = left["resumable_from_step"]
            assert isinstance(step, int) and step >= 10
            assert left["error"].startswith("interrupted: server restarted at step")
            assert f"resume it to continue from its checkpoint at step {step}" in left["error"]
            resumed = http.post(left["links"]["resume"]).json()
            done = poll(http, resumed["id"], ended, timeout=120)
            assert done["status"] == "completed", done["error"]
            assert f"Found step {step} in metadata" in log_of(http, resumed["id"])
    finally:
        again.stop()


def _pid_of(settings: Settings, job_id: str) -> int:
    from sqlmodel import Session, create_engine

    from core.jobs.rows import Job

    engine = create_engine(settings.effective_database_url)
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None and job.pid
        return int(job.pid)
