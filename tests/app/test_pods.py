"""Several pods on one PostgreSQL: real `python -m app serve` processes with the stand-in trainer.

Each pod has its own name, port and GPU slots; they share the database and (like a network volume) the
workspace. The lease is short so a killed pod is noticed in seconds."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.trainer import make_dataset
from tests.helpers import FAKE_TOOLKIT_DIR, REPO_ROOT, free_port, fresh_postgres

LEASE_SECONDS = 2.0
TRAIN = {"type": "train", "training_name": "faces", "trigger_word": "sks", "base_model": "sd15"}
TERMINAL = {"completed", "failed", "cancelled"}


class Pod:
    """One `python -m app serve` process (its own session, so kill -9 hits the server alone)."""

    def __init__(self, name: str, *, database_url: str, workspace: Path, logs: Path, gpus: str, **env: str) -> None:
        self.name = name
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = logs / f"{name}.log"
        environ = {
            **os.environ,
            "LORAPOD_DATABASE_URL": database_url,
            "LORAPOD_WORKER_ID": name,
            "LORAPOD_WORKSPACE": str(workspace),
            "LORAPOD_GPUS": gpus,
            "LORAPOD_LEASE_SECONDS": str(LEASE_SECONDS),
            "LORAPOD_PROGRESS_INTERVAL_SECONDS": "0.1",
            "LORAPOD_STOP_GRACE_SECONDS": "10",
            "AI_TOOLKIT_DIR": str(FAKE_TOOLKIT_DIR),
            "AI_TOOLKIT_PYTHON": sys.executable,
            **env,
        }
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--port", str(self.port), "--log-level", "warning"],
                cwd=REPO_ROOT,
                env=environ,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.http = httpx.Client(base_url=self.url, timeout=30)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/health").status_code == 200:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pod {name} did not start:\n{self.log_path.read_text()}")
            time.sleep(0.1)

    def submit(self, **fields: Any) -> str:
        answer = self.http.post("/jobs", json={**TRAIN, **fields})
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        answer = self.http.get(f"/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def wait(self, job_id: str, until: Any, timeout: float = 120) -> dict[str, Any]:
        """Poll this pod until until(job) holds; the job as last seen."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if until(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"{job_id} on {self.name} never got there: {job}")
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9 of the server process only (its trainers live on in their own sessions)."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """A fresh database and a shared workspace holding the test dataset; pods are started by the test."""
    with fresh_postgres() as url:
        workspace = tmp_path / "workspace"
        make_dataset(workspace / "training_data" / "faces", 1)
        pods: list[Pod] = []
        trainer_pids: list[int] = []
        runs = tmp_path / "runs.log"
        monkeypatch.setenv("FAKE_AITK_RUN_LOG", str(runs))

        def start(name: str, gpus: str = "0") -> Pod:
            pod = Pod(name, database_url=url, workspace=workspace, logs=tmp_path, gpus=gpus)
            pods.append(pod)
            return pod

        try:
            yield {"start": start, "runs": runs, "trainer_pids": trainer_pids}
        finally:
            for pod in pods:
                pod.stop()
            for pid in trainer_pids:  # trainers of a killed pod outlive it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_hundred_jobs_on_two_pods_each_run_exactly_once(cluster: dict[str, Any]) -> None:
    a, b = cluster["start"]("pod-a", "0,1"), cluster["start"]("pod-b", "0,1")
    ids: list[str] = []
    lock = threading.Lock()

    def submit_to(pod: Pod) -> None:
        for _ in range(50):
            job_id = pod.submit(steps=2, save_every=2, sample_every=2)
            with lock:
                ids.append(job_id)

    threads = [threading.Thread(target=submit_to, args=(pod,)) for pod in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(ids)) == 100

    deadline = time.monotonic() + 480
    while True:
        listing = a.http.get("/jobs", params={"limit": 500}).json()["data"]
        done = [job for job in listing if job["status"] in TERMINAL]
        if len(done) == 100 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sorted(job["id"] for job in listing) == sorted(ids)
    assert {job["status"] for job in listing} == {"completed"}, [j["error"] for j in listing if j["error"]]
    # every job's trainer started exactly once, whichever pod took it
    started = [line.split()[0] for line in cluster["runs"].read_text().splitlines()]
    assert len(started) == 100
    assert sorted(Path(config).parent.name for config in started) == sorted(ids)
    share = Counter(job["worker_id"] for job in listing)
    assert set(share) == {"pod-a", "pod-b"}, share  # both pods took work
    print(f"100 jobs ran once each: {dict(share)}")
    assert b.job(ids[0]) == a.job(ids[0])  # any pod shows the same record


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_pod_loses_its_job_and_the_queue_moves_to_the_other(
    cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.05")
    a = cluster["start"]("pod-a")
    blocker = a.submit(steps=100000)  # keeps pod-a's one slot busy
    a.wait(blocker, lambda j: j["status"] == "running" and j["worker_id"] == "pod-a")
    b = cluster["start"]("pod-b")
    doomed = b.submit(steps=100000)
    running = b.wait(doomed, lambda j: j["status"] == "running" and j["progress"]["step"] >= 1)
    assert running["worker_id"] == "pod-b"
    cluster["trainer_pids"].append(_pid_of(b, doomed))
    waiting = b.submit(steps=3, save_every=3, sample_every=3)
    assert a.job(waiting)["status"] == "queued"

    b.kill()
    killed_at = time.monotonic()
    lost = a.wait(doomed, lambda j: j["status"] in TERMINAL, timeout=60)
    noticed_after = time.monotonic() - killed_at
    assert lost["status"] == "failed" and lost["error"].startswith("worker lost"), lost
    assert "'pod-b'" in lost["error"] and lost["outputs_on"] == "pod-b"
    print(f"worker lost noticed {noticed_after:.2f} s after kill -9 (lease {LEASE_SECONDS} s)")

    assert a.http.post(f"/jobs/{blocker}/cancel").status_code == 202
    moved = a.wait(waiting, lambda j: j["status"] in TERMINAL, timeout=60)
    assert moved["status"] == "completed" and moved["worker_id"] == "pod-a", moved


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_cancel_sent_to_one_pod_stops_the_trainer_on_the_other(
    cluster: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.05")
    b = cluster["start"]("pod-b")
    job_id = b.submit(steps=100000)
    b.wait(job_id, lambda j: j["status"] == "running" and j["progress"]["step"] >= 1)
    a = cluster["start"]("pod-a")
    seen_on_a = a.wait(job_id, lambda j: j["progress"]["step"] >= 3)  # progress written by pod-b, read on pod-a
    assert seen_on_a["worker_id"] == "pod-b" and seen_on_a["status"] == "running"
    pid = _pid_of(b, job_id)
    cluster["trainer_pids"].append(pid)

    sent_at = time.monotonic()
    assert a.http.post(f"/jobs/{job_id}/cancel").status_code == 202
    final = a.wait(job_id, lambda j: j["status"] in TERMINAL, timeout=60)
    took = time.monotonic() - sent_at
    assert final["status"] == "cancelled" and final["exit_code"] == 0, final  # SIGINT from pod-b: a clean stop
    assert _group_gone(pid)
    print(f"cancel on pod-a honoured by pod-b in {took:.2f} s")


def _pid_of(pod: Pod, job_id: str) -> int:
    """The trainer's pid as the record holds it (the REST view leaves it out)."""
    from sqlalchemy import text

    from core.db import make_engine

    engine = make_engine(pod.database_url)
    try:
        deadline = time.monotonic() + 30
        while True:
            with engine.connect() as connection:
                pid = connection.execute(text("SELECT pid FROM jobs WHERE id = :id"), {"id": job_id}).scalar()
            if pid or time.monotonic() > deadline:
                assert pid, f"{job_id} has no pid"
                return int(pid)
            time.sleep(0.05)
    finally:
        engine.dispose()


def _group_gone(pgid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
