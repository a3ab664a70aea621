"""Serverless without a volume: three `python -m app.handler` workers in the runpod SDK's real worker loop,
each with its own workspace and database, sharing one bucket of a real S3-compatible server."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.app.test_handler_worker import REPO, STARTUP_SECONDS, Worker, result_of, worker_environment
from tests.fakes.runpod_platform import FakeRunPodPlatform
from tests.s3server import SECRET_KEY, S3Server


def start_worker(root: Path, name: str, extra: dict[str, str]) -> Worker:
    """One worker process with its own platform, workspace and log."""
    platform = FakeRunPodPlatform().start()
    workspace = root / name / "workspace"
    log = root / f"{name}.log"
    env = worker_environment(workspace, {**platform.worker_env(name), "HF_HUB_OFFLINE": "1", **extra})
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.handler"],
            cwd=REPO,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group, so killing it takes the trainer too
        )
    return Worker(platform=platform, process=process, workspace=workspace, log=log)


def stop_worker(worker: Worker) -> None:
    if worker.process.poll() is None:
        worker.process.terminate()
        try:
            worker.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
    worker.platform.stop()


def run(worker: Worker, job_id: str, job_input: dict[str, Any], timeout: float = STARTUP_SECONDS) -> Any:
    """Hand the worker one job and return its output (failing with the worker's log on an error result)."""
    worker.platform.add_job(job_id, job_input)
    body = result_of(worker, job_id, timeout).body
    assert "output" in body, f"{job_id}: {body}\n{worker.output()[-3000:]}"
    return body["output"]


@pytest.fixture
def workers(tmp_path: Path, s3_server: S3Server) -> Iterator[tuple[Worker, Worker, Worker]]:
    bucket_env = s3_server.env(s3_server.new_bucket(), prefix="endpoint-1")
    started = [start_worker(tmp_path, name, {**bucket_env, "FAKE_AITK_STEP_SECONDS": "0.02"}) for name in "abc"]
    try:
        yield started[0], started[1], started[2]
    finally:
        for worker in started:
            stop_worker(worker)


def png(index: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (40 * index, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_on_one_worker_train_on_another_download_from_a_third(
    workers: tuple[Worker, Worker, Worker],
) -> None:
    uploader, trainer, downloader = workers
    files = []
    for index in range(2):
        files.append({"filename": f"img_{index}.png", "content": base64.b64encode(png(index)).decode()})
        files.append({"filename": f"img_{index}.txt", "content": base64.b64encode(b"a photo of sks").decode()})
    summary = run(uploader, "up", {"type": "upload_training_data", "training_name": "faces", "files": files})
    assert summary["images"] == 2 and summary["captions"] == 2

    assert not (trainer.workspace / "training_data" / "faces").exists()
    train = {"type": "train", "training_name": "faces", "base_model": "sd15", "steps": 20, "save_every": 10}
    process = run(trainer, "train", train)
    assert process["status"] == "completed", process
    lora = next(a for a in process["artifacts"] if a["kind"] == "lora")
    trained = (trainer.workspace / lora["path"]).read_bytes()
    assert lora["object"]["sha256"] == hashlib.sha256(trained).hexdigest()

    # The third worker never saw the dataset nor the job: its database is empty, the bucket has the record.
    status = run(downloader, "status", {"type": "process_status", "process_id": process["id"]})
    assert status["status"] == "completed" and status["id"] == process["id"]
    answer = run(downloader, "download", {"type": "download", "process_id": process["id"]})
    assert answer["delivery"] == "url" and answer["sha256"] == hashlib.sha256(trained).hexdigest()
    assert httpx.get(answer["url"]).content == trained
    assert not (downloader.workspace / lora["path"]).exists()

    for worker in workers:
        assert SECRET_KEY not in worker.output()
        assert answer["url"] not in worker.output()  # the signed URL goes to the caller only


def test_a_worker_killed_mid_training_left_its_saved_checkpoints_in_the_bucket(
    tmp_path: Path, s3_server: S3Server
) -> None:
    bucket = s3_server.new_bucket()
    worker = start_worker(tmp_path, "doomed", {**s3_server.env(bucket), "FAKE_AITK_STEP_SECONDS": "0.05"})
    try:
        from tests.fakes.trainer import make_dataset

        make_dataset(tmp_path / "src", 2)
        files = [
            {"filename": p.name, "content": base64.b64encode(p.read_bytes()).decode()}
            for p in (tmp_path / "src").iterdir()
        ]
        run(worker, "up", {"type": "upload_training_data", "training_name": "faces", "files": files})
        job = {"type": "train", "training_name": "faces", "base_model": "sd15", "steps": 5000, "save_every": 10}
        job["max_step_saves_to_keep"] = 50  # none pruned locally, so each can be compared with its upload
        worker.platform.add_job("long", job)

        client = s3_server.client()

        def recorded_checkpoints() -> list[dict[str, Any]] | None:
            """The checkpoints the job's record in the bucket lists as stored (what another worker would see)."""
            with sqlite3.connect(worker.workspace / "lorapod.db") as db:
                row = db.execute("SELECT id FROM jobs WHERE type = 'train'").fetchone()
            if row is None:
                return None
            try:
                body = client.get_object(Bucket=bucket, Key=f"jobs/{row[0]}/job.json")["Body"].read()
            except client.exceptions.NoSuchKey:
                return None
            record = json.loads(body)
            stored = [a for a in record["artifacts"] if a["kind"] == "checkpoint" and "object" in a]
            return stored if record["status"] == "running" and len(stored) >= 2 else None

        checkpoints = worker.platform.wait_until(recorded_checkpoints, STARTUP_SECONDS, "two checkpoints recorded")
        os.killpg(worker.process.pid, signal.SIGKILL)  # the worker and its trainer, with no chance to clean up
        worker.process.wait()
    finally:
        stop_worker(worker)
    # Every checkpoint the record lists is in the bucket, byte for byte what the killed worker had written.
    for checkpoint in checkpoints:
        local = (worker.workspace / checkpoint["path"]).read_bytes()
        stored = client.get_object(Bucket=bucket, Key=checkpoint["object"]["key"])["Body"].read()
        assert stored == local and hashlib.sha256(stored).hexdigest() == checkpoint["object"]["sha256"]
        assert checkpoint["object"]["size"] == len(local)


def test_refused_credentials_are_reported_at_start_up_and_in_health(tmp_path: Path) -> None:
    strict = S3Server(require_auth=True)  # knows no key: every key is refused
    try:
        env = worker_environment(tmp_path / "ws", strict.env("loras"))
        health = json.dumps({"input": {"type": "health"}})
        done = subprocess.run(
            [sys.executable, "-m", "app.handler", "--test_input", health],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        strict.stop()
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "object storage is not usable: access check: bucket 'loras' refused the credentials" in out
    assert "'storage': {'configured': True, 'ok': False" in out and "'status': 'degraded'" in out
    assert SECRET_KEY not in out
