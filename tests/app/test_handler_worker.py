"""The serverless handler under the SDK's real worker loop (production mode), against a stand-in platform.

`python -m app.handler` runs as a subprocess with the platform's environment pointed at
tests/fake_runpod_platform.py; the stand-in ai-toolkit trains. Also the SDK's local modes: `--test_input`,
test_input.json and `--rp_serve_api`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.runpod_platform import FakeRunPodPlatform
from tests.fakes.trainer import make_dataset
from tests.helpers import FAKE_TOOLKIT_DIR, free_port

REPO = Path(__file__).resolve().parents[2]
WORKER_ID = "worker-under-test"
STARTUP_SECONDS = 60


def worker_environment(workspace: Path, extra: dict[str, str]) -> dict[str, str]:
    """The worker's environment: this venv, the stand-in trainer, a private workspace, fast timings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "LORAPOD_")) and k != "HF_TOKEN"}
    env.update(
        {
            "LORAPOD_WORKSPACE": str(workspace),
            "AI_TOOLKIT_DIR": str(FAKE_TOOLKIT_DIR),
            "AI_TOOLKIT_PYTHON": sys.executable,
            "LORAPOD_STOP_GRACE_SECONDS": "5",
            "LORAPOD_PROGRESS_INTERVAL_SECONDS": "0.2",
            "RUNPOD_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


@dataclass
class Worker:
    """A running worker process and the platform it talks to."""

    platform: FakeRunPodPlatform
    process: subprocess.Popen[bytes]
    workspace: Path
    log: Path

    def job_row(self, process_id: str) -> tuple[str, int | None]:
        """(status, pid) of a lorapod process, read straight from the worker's database."""
        with sqlite3.connect(self.workspace / "lorapod.db") as db:
            row = db.execute("SELECT status, pid FROM jobs WHERE id = ?", (process_id,)).fetchone()
        assert row is not None, f"no job {process_id} in the worker's database"
        return row[0], row[1]

    def output(self) -> str:
        """What the worker printed so far."""
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    """One worker process for the module: starting the SDK costs seconds, the jobs run one after another."""
    root = tmp_path_factory.mktemp("worker")
    workspace = root / "workspace"
    make_dataset(workspace / "training_data" / "faces", 2)
    platform = FakeRunPodPlatform().start()
    log = root / "worker.log"
    env = worker_environment(
        workspace, {**platform.worker_env(WORKER_ID), "FAKE_AITK_STEP_SECONDS": "0.05", "HF_HUB_OFFLINE": "1"}
    )
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.handler"], cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        yield Worker(platform=platform, process=process, workspace=workspace, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        platform.stop()


def result_of(worker: Worker, job_id: str, timeout: float = STARTUP_SECONDS) -> Any:
    """The job's final job-done body, waiting for it (and failing with the worker's output if it never comes)."""
    try:
        return worker.platform.wait_until(lambda: worker.platform.result(job_id), timeout, f"the result of {job_id}")
    except AssertionError:
        raise AssertionError(f"no result for {job_id}; worker output:\n{worker.output()[-4000:]}") from None


def test_bad_input_comes_back_as_an_error_result(worker: Worker) -> None:
    worker.platform.add_job("j-bad", {"type": "no_such_type"})
    posted = result_of(worker, "j-bad")
    assert set(posted.body) == {"error"}
    assert posted.body["error"].startswith("type: unknown type 'no_such_type'")
    assert posted.is_stream is False
    # The worker authenticates with the raw platform key, as the SDK does.
    assert posted.authorization == worker.platform.api_key


def test_training_reports_progress_then_the_finished_process(worker: Worker) -> None:
    job_input = {"type": "train", "training_name": "faces", "base_model": "sd15", "steps": 30, "save_every": 10}
    worker.platform.add_job("j-train", job_input)
    final = result_of(worker, "j-train")
    posts = worker.platform.posted("j-train")
    progress = [p.body["output"] for p in posts if p.is_progress]

    assert final.body.keys() == {"output"}, final.body
    process = final.body["output"]
    assert process["status"] == "completed" and process["type"] == "train"
    assert process["progress"]["step"] == 30
    assert {a["kind"] for a in process["artifacts"]} >= {"lora", "checkpoint"}
    lora = next(a for a in process["artifacts"] if a["kind"] == "lora")
    assert (worker.workspace / lora["path"]).is_file()

    # Progress came through progress_update, before the result, for this process, and it moved.
    assert len(progress) >= 2, progress
    assert posts.index(final) == len(posts) - 1
    assert {p["process_id"] for p in progress} == {process["id"]}
    # progress_update posts from a thread of its own per call, so arrival order is not send order:
    # the queued report must be there, not necessarily first.
    assert "queued" in [p["status"] for p in progress]
    running_steps = [p["step"] for p in progress if p["status"] == "running"]
    assert running_steps and running_steps == sorted(running_steps) and running_steps[-1] > 0
    # While the job ran, the heartbeat named it.
    assert any("j-train" in ",".join(ping.get("job_id", [])) for ping in worker.platform.pings)


def test_a_stopped_job_stops_its_trainer_and_reports_nothing(worker: Worker) -> None:
    job_input = {"type": "train", "training_name": "faces", "base_model": "sd15", "steps": 5000, "save_every": 1000}
    worker.platform.add_job("j-cancel", job_input)

    def running() -> dict[str, Any] | None:
        for posted in worker.platform.posted("j-cancel"):
            if posted.is_progress and posted.body["output"]["status"] == "running":
                return posted.body["output"]
        return None

    update = worker.platform.wait_until(running, STARTUP_SECONDS, "the cancel job to run")
    process_id = update["process_id"]
    status, pid = worker.platform.wait_until(
        lambda: (row := worker.job_row(process_id))[1] and row, 30, "the trainer's pid in the database"
    )
    assert status == "running" and Path(f"/proc/{pid}").exists()

    worker.platform.stop_job("j-cancel")
    worker.platform.wait_until(lambda: worker.job_row(process_id)[0] == "cancelled", 30, "the process to be cancelled")
    worker.platform.wait_until(lambda: not Path(f"/proc/{pid}").exists(), 10, f"trainer pid {pid} to be gone")

    # The worker carries on with the next job; the stopped one never got a result (RunPod owns its status).
    worker.platform.add_job("j-after", {"type": "health"})
    after = result_of(worker, "j-after")
    assert after.body["output"]["database"]["ok"] is True
    assert worker.platform.result("j-cancel") is None
    assert "Stopping job" in worker.output()


def test_worker_settings_prefer_the_network_volume_and_the_platforms_worker_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import app.handler

    monkeypatch.delenv("LORAPOD_WORKSPACE", raising=False)
    monkeypatch.delenv("LORAPOD_WORKER_ID", raising=False)
    monkeypatch.setenv("RUNPOD_POD_ID", "abc123")
    monkeypatch.setattr(app.handler, "NETWORK_VOLUME", tmp_path)
    settings = app.handler.worker_settings()
    assert settings.workspace == tmp_path and settings.worker_id == "abc123"
    monkeypatch.setattr(app.handler, "NETWORK_VOLUME", tmp_path / "not-mounted")
    monkeypatch.setattr(app.handler, "POD_WORKSPACE", tmp_path / "pod")
    assert app.handler.worker_settings().workspace == tmp_path / "pod"
    monkeypatch.setenv("LORAPOD_WORKSPACE", str(tmp_path / "chosen"))
    monkeypatch.setenv("LORAPOD_WORKER_ID", "mine")
    chosen = app.handler.worker_settings()
    assert chosen.workspace == tmp_path / "chosen" and chosen.worker_id == "mine"


def run_local(workspace: Path, args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """python -m app.handler in the SDK's local test mode."""
    env = worker_environment(workspace, {})
    return subprocess.run(
        [sys.executable, "-m", "app.handler", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_test_input_flag_and_the_shipped_test_input_json(tmp_path: Path) -> None:
    shipped = json.loads((REPO / "test_input.json").read_text())
    assert shipped == {"input": {"type": "health"}}

    flag = run_local(tmp_path / "a", ["--test_input", json.dumps({"input": {"type": "lora"}})])
    assert flag.returncode == 0, flag.stdout + flag.stderr
    assert "'loras': []" in flag.stdout + flag.stderr

    from_file = run_local(tmp_path / "b", [])
    assert from_file.returncode == 0, from_file.stdout + from_file.stderr
    assert "'database': {'ok': True" in from_file.stdout + from_file.stderr

    bad = run_local(tmp_path / "c", ["--test_input", json.dumps({"input": {"type": "cancel"}})])
    assert bad.returncode == 1
    assert "process_id: is required" in bad.stdout + bad.stderr


def test_rp_serve_api_runs_calls(tmp_path: Path) -> None:
    port = free_port()
    env = worker_environment(tmp_path / "ws", {})
    process = subprocess.Popen(
        [sys.executable, "-m", "app.handler", "--rp_serve_api", "--rp_api_port", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://localhost:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                response = httpx.post(f"{url}/runsync", json={"input": {"type": "health"}}, timeout=30)
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, "the local API server did not start"
                time.sleep(0.2)
        body = response.json()
        assert body["status"] == "COMPLETED" and body["output"]["database"]["ok"] is True
        failed = httpx.post(f"{url}/runsync", json={"input": {"type": "train"}}, timeout=30).json()
        assert failed["status"] == "FAILED" and failed["error"] == "training_name: is required"
    finally:
        process.terminate()
        process.wait(timeout=30)
