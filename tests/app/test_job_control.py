"""Steering a running training through ai-toolkit's job-control table, over a real uvicorn server:
cancel with a checkpoint, save now, sample now, and the trainer's own status line in the progress."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from core.settings import Settings
from tests.fakes.trainer import make_dataset

LONG: dict[str, Any] = {
    "type": "train",
    "training_name": "faces",
    "base_model": "sd15",
    "steps": 2000,
    "save_every": 2000,
    "sample_every": 2000,
    "sample_prompts": ["a photo of [trigger]"],
    "trigger_word": "sks",
}
TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture(autouse=True)
def slow_steps(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.02")
    make_dataset(Path(settings.workspace) / "training_data" / "faces", 2)


def poll(
    http: httpx.Client, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/jobs/{job_id}").json()
        if until(job):
            return job
        assert job["status"] not in TERMINAL or until(job), f"{job_id} ended {job['status']}: {job['error']}"
        assert time.monotonic() < deadline, f"{job_id}: condition not met; last {job['status']} {job['progress']}"
        time.sleep(0.05)


def training(job: dict[str, Any]) -> bool:
    return job["status"] == "running" and job["progress"]["step"] >= 5 and job["progress"]["info"] == "Training"


def kinds(job: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [a for a in job["artifacts"] if a["kind"] == kind]


def test_cancel_with_save_ends_cancelled_with_a_fresh_checkpoint(http: httpx.Client) -> None:
    job = http.post("/jobs", json=LONG).json()
    running = poll(http, job["id"], training)
    assert kinds(running, "checkpoint") == []
    answer = http.post(f"/jobs/{job['id']}/cancel", params={"save": "true"})
    assert answer.status_code == 202 and answer.json()["cancel_requested"] is True
    done = poll(http, job["id"], lambda j: j["status"] in TERMINAL)
    assert done["status"] == "cancelled", done["error"]
    saved = kinds(done, "checkpoint")
    assert len(saved) == 1 and saved[0]["step"] >= running["progress"]["step"]
    assert kinds(done, "lora") == []  # stopped, not finished
    assert done["exit_code"] == 0  # stopped by SIGINT after the save, not by the stop flag (which exits 1)
    assert done["progress"]["info"] == "Job stopped"
    checkpoint = http.get(saved[0]["url"])
    assert checkpoint.status_code == 200 and checkpoint.content[8:9] == b"{"


def test_save_now_writes_a_checkpoint_and_training_goes_on(http: httpx.Client) -> None:
    job = http.post("/jobs", json={**LONG, "steps": 150}).json()
    poll(http, job["id"], training)
    assert http.post(f"/jobs/{job['id']}/save").status_code == 202
    with_checkpoint = poll(http, job["id"], lambda j: bool(kinds(j, "checkpoint")))
    assert with_checkpoint["status"] == "running"
    done = poll(http, job["id"], lambda j: j["status"] in TERMINAL)
    assert done["status"] == "completed", done["error"]
    assert len(kinds(done, "lora")) == 1 and len(kinds(done, "checkpoint")) == 1
    assert done["progress"]["info"] == "Training completed"


def test_sample_now_renders_the_prompts_mid_training(http: httpx.Client) -> None:
    job = http.post("/jobs", json=LONG).json()
    poll(http, job["id"], training)
    assert http.post(f"/jobs/{job['id']}/sample").status_code == 202
    sampled = poll(http, job["id"], lambda j: bool(kinds(j, "sample")))
    assert sampled["status"] == "running"
    assert kinds(sampled, "sample")[0]["step"] > 0
    http.post(f"/jobs/{job['id']}/cancel")
    poll(http, job["id"], lambda j: j["status"] in TERMINAL)


def test_the_launched_config_reads_the_control_table(http: httpx.Client, settings: Settings) -> None:
    job = http.post("/jobs", json={**LONG, "steps": 5}).json()
    done = poll(http, job["id"], lambda j: j["status"] in TERMINAL)
    assert done["status"] == "completed", done["error"]
    launched = yaml.safe_load((Path(settings.workspace) / "output" / job["id"] / "job_config.yaml").read_text())
    process = launched["config"]["process"][0]
    assert process["type"] == "diffusion_trainer"
    assert process["sample"]["neg"] == ""
    assert Path(process["sqlite_db_path"]).parent == Path(settings.workspace).resolve() / "output" / job["id"]
    assert not any(".aitk" in a["name"] for a in done["artifacts"])
    files = http.get("/files", params={"directory": f"output/{job['id']}"}).json()
    assert ".aitk" not in str(files)


@pytest.mark.parametrize("action", ["save", "sample"])
def test_save_and_sample_need_a_running_controllable_training(http: httpx.Client, action: str) -> None:
    assert http.post(f"/jobs/train_000000000000/{action}").status_code == 404
    job = http.post("/jobs", json={**LONG, "steps": 3}).json()
    poll(http, job["id"], lambda j: j["status"] in TERMINAL)
    finished = http.post(f"/jobs/{job['id']}/{action}")
    assert finished.status_code == 409 and "only a running training" in finished.json()["error"]


def test_sample_without_prompts_is_a_409(http: httpx.Client) -> None:
    job = http.post("/jobs", json={**LONG, "sample_prompts": []}).json()
    poll(http, job["id"], training)
    refused = http.post(f"/jobs/{job['id']}/sample")
    assert refused.status_code == 409 and "no sample prompts" in refused.json()["error"]
    http.post(f"/jobs/{job['id']}/cancel")
    poll(http, job["id"], lambda j: j["status"] in TERMINAL)


def test_cancel_with_save_on_a_trainer_without_the_table_falls_back_to_sigint(
    http: httpx.Client, settings: Settings
) -> None:
    text = yaml.safe_dump(
        {
            "job": "extension",
            "config": {
                "name": "ti",
                "process": [
                    {
                        "type": "textual_inversion_trainer",
                        "datasets": [{"folder_path": "training_data/faces"}],
                        "train": {"steps": 2000},
                        "save": {"save_every": 2000},
                        "model": {"name_or_path": "org/model"},
                    }
                ],
            },
        }
    )
    job = http.post("/jobs", json={"type": "train_with_yaml", "yaml_config": text}).json()
    poll(http, job["id"], lambda j: j["status"] == "running" and j["progress"]["step"] >= 3)
    assert http.post(f"/jobs/{job['id']}/save").status_code == 409
    http.post(f"/jobs/{job['id']}/cancel", params={"save": "true"})
    done = poll(http, job["id"], lambda j: j["status"] in TERMINAL)
    assert done["status"] == "cancelled" and done["progress"]["info"] is None


def test_the_contract_cancel_takes_save(http: httpx.Client) -> None:
    job = http.post("/jobs", json=LONG).json()
    poll(http, job["id"], training)
    call = http.post("/v2/ep/runsync", json={"input": {"type": "cancel", "process_id": job["id"], "save": True}}).json()
    assert call["status"] == "COMPLETED" and call["output"]["cancel_requested"] is True
    done = poll(http, job["id"], lambda j: j["status"] in TERMINAL)
    assert done["status"] == "cancelled" and len(kinds(done, "checkpoint")) == 1
    bad = http.post("/v2/ep/runsync", json={"input": {"type": "cancel", "process_id": job["id"], "save": "maybe"}})
    assert bad.json()["status"] == "FAILED" and bad.json()["error"].startswith("save:")


def test_cancel_with_save_from_another_worker_still_saves_first(http: httpx.Client, settings: Settings) -> None:
    from core.jobs.service import JobService

    job = http.post("/jobs", json=LONG).json()
    poll(http, job["id"], training)
    # a second pod sharing the database and the workspace; the trainer runs on the first one
    other = JobService(settings.model_copy(update={"worker_id": "other-pod"}))
    answered = other.cancel(job["id"], save=True)
    assert answered.cancel_requested and answered.status == "running"
    done = poll(http, job["id"], lambda j: j["status"] in TERMINAL)  # the owner's housekeeping stops it
    assert done["status"] == "cancelled", done["error"]
    assert len(kinds(done, "checkpoint")) == 1 and done["exit_code"] == 0


def test_the_trainers_status_line_shows_a_save_in_progress(http: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AITK_SAVE_SECONDS", "1.5")
    job = http.post("/jobs", json=LONG).json()
    poll(http, job["id"], training)
    http.post(f"/jobs/{job['id']}/save")
    saving = poll(http, job["id"], lambda j: j["progress"]["info"] == "Saving model")
    assert saving["status"] == "running"
    after = poll(http, job["id"], lambda j: j["progress"]["info"] == "Training" and bool(kinds(j, "checkpoint")))
    assert after["status"] == "running"
    http.post(f"/jobs/{job['id']}/cancel")
    poll(http, job["id"], lambda j: j["status"] in TERMINAL)
