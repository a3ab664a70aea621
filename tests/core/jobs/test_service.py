"""The core job service with the stand-in trainer: lifecycle, failures, cancel, scheduling, restarts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from core.errors import Conflict, NotFound, Unavailable
from core.jobs.recovery import INTERRUPTED
from core.jobs.rows import Job, JobStatus, JobType, utcnow
from core.jobs.service import JobService
from core.settings import Settings
from tests.fakes.trainer import make_dataset
from tests.helpers import make_settings, train_params


@pytest.fixture
def settings(tmp_path: Path, database_url: str | None) -> Settings:
    """Every test here runs on SQLite and on PostgreSQL."""
    return make_settings(tmp_path, database_url=database_url)


@pytest.fixture
def dataset(service: JobService) -> Path:
    return make_dataset(service.workspace.training_data / "faces", 2)


async def wait_status(service: JobService, job_id: str, statuses: set[str], timeout: float = 30) -> Job:
    """Poll until the job reaches one of statuses."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = service.get(job_id)
        if job.status in statuses:
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{job_id} stayed {job.status}, wanted {statuses}")
        await asyncio.sleep(0.05)


def group_gone(pgid: int, within: float = 3.0) -> bool:
    """True once no process of the group is left (a killed group takes a moment to be reaped)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


async def test_training_completes_with_progress_and_artifacts(service: JobService, dataset: Path) -> None:
    job = service.submit_training(train_params())
    assert job.status == JobStatus.queued and job.id.startswith("train_") and len(job.id) == len("train_") + 12
    seen_steps: list[int] = []
    final = await service.wait(job.id, timeout=60, on_change=lambda j: seen_steps.append(j.step))
    assert final.status == JobStatus.completed, final.error
    assert final.exit_code == 0 and final.step == 12 and final.total_steps == 12
    assert seen_steps == sorted(seen_steps) and seen_steps[-1] == 12
    kinds = {a["kind"] for a in final.artifacts}
    assert {"lora", "checkpoint", "sample", "log", "config"} <= kinds
    lora = next(a for a in final.artifacts if a["kind"] == "lora")
    assert lora["name"] == f"{final.name}.safetensors"
    assert (service.workspace.root / lora["path"]).read_bytes()[:8]  # a real file on disk
    assert {a["step"] for a in final.artifacts if a["kind"] == "checkpoint"} == {5, 10}
    assert final.started_at is not None and final.finished_at is not None and final.pid
    assert service.final_lora_of(job.id) == service.workspace.root / lora["path"]


async def test_failure_carries_error_running_job_message(
    service: JobService, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_FAIL_AT_STEP", "3")
    job = service.submit_training(train_params())
    final = await service.wait(job.id, timeout=60)
    assert final.status == JobStatus.failed
    assert final.exit_code == 1
    assert final.error and "Traceback" not in final.error and len(final.error) < 500
    assert "3" in final.error  # the stand-in's exception names the step it failed at


async def test_cancel_queued_then_running(service: JobService, dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.2")
    monkeypatch.setenv("FAKE_AITK_SPAWN_CHILD", "1")
    first = service.submit_training(train_params(steps=500))
    second = service.submit_training(train_params(steps=500))
    running = await wait_status(service, first.id, {JobStatus.running})
    assert service.get(second.id).status == JobStatus.queued  # one slot: the second waits

    cancelled = service.cancel(second.id)
    assert cancelled.status == JobStatus.cancelled and cancelled.pid is None

    # wait until the trainer is really drawing its bar, then stop it
    await wait_status(service, first.id, {JobStatus.running})
    for _ in range(100):
        if service.get(first.id).step >= 1:
            break
        await asyncio.sleep(0.05)
    running = service.get(first.id)
    assert running.pid
    service.cancel(first.id)
    final = await service.wait(first.id, timeout=30)
    assert final.status == JobStatus.cancelled and final.exit_code == 0
    assert group_gone(running.pid)
    with pytest.raises(Conflict):
        service.cancel(first.id)


async def test_cancel_kills_group_after_grace(
    tmp_path: Path, database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.1")
    monkeypatch.setenv("FAKE_AITK_IGNORE_SIGINT", "1")
    svc = JobService(make_settings(tmp_path, stop_grace_seconds=0.5, database_url=database_url))
    await svc.start()
    try:
        make_dataset(svc.workspace.training_data / "faces", 1)
        job = svc.submit_training(train_params(steps=500))
        running = await wait_status(svc, job.id, {JobStatus.running})
        while svc.get(job.id).step < 1:  # its SIGINT handler is installed once it trains
            await asyncio.sleep(0.02)
        pid = svc.get(job.id).pid
        svc.cancel(job.id)
        final = await svc.wait(job.id, timeout=30)
        assert final.status == JobStatus.cancelled
        assert final.exit_code == -signal.SIGKILL
        assert pid and group_gone(pid) and running.id == job.id
    finally:
        await svc.close()


async def test_two_slots_run_two_jobs_and_queue_the_third(
    tmp_path: Path, database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.05")
    svc = JobService(make_settings(tmp_path, gpus="0,1", database_url=database_url))
    await svc.start()
    try:
        make_dataset(svc.workspace.training_data / "faces", 1)
        jobs = [svc.submit_training(train_params(steps=30)) for _ in range(3)]
        await wait_status(svc, jobs[0].id, {JobStatus.running})
        await wait_status(svc, jobs[1].id, {JobStatus.running})
        assert svc.get(jobs[2].id).status == JobStatus.queued
        assert {svc.get(j.id).gpu for j in jobs[:2]} == {"0", "1"}
        finals = [await svc.wait(j.id, timeout=60) for j in jobs]
        assert all(f.status == JobStatus.completed for f in finals), [f.error for f in finals]
        # the third started only after one of the first two had finished
        assert finals[2].started_at >= min(finals[0].finished_at, finals[1].finished_at)
        for final in finals:
            env = json.loads((svc.workspace.root / final.config["save_root"] / "env.json").read_text())
            assert env["CUDA_VISIBLE_DEVICES"] == final.gpu
            assert env["PYTHONUNBUFFERED"] == "1"
    finally:
        await svc.close()


async def test_restart_fails_orphans_and_runs_queued_jobs(settings: Settings) -> None:
    first = JobService(settings)
    await first.start()
    make_dataset(first.workspace.training_data / "faces", 1)
    await first.close()
    # what a crashed server leaves behind: a running job whose process is gone, and a queued job
    orphan = Job(
        id="train_0123456789ab",
        type=JobType.train,
        status=JobStatus.running,
        name="old",
        pid=2**22 + 7,
        worker_id=settings.worker_id,
        started_at=utcnow(),
        gpu="0",
        config={"name": "old", "save_root": "output/x"},
    )
    first.store.insert(orphan)
    queued = first.submit_training(train_params())

    second = JobService(settings)
    await second.start()
    try:
        failed = second.get(orphan.id)
        assert failed.status == JobStatus.failed and (failed.error or "").startswith(INTERRUPTED)
        final = await second.wait(queued.id, timeout=60)
        assert final.status == JobStatus.completed
    finally:
        await second.close()


async def test_trainer_outlives_a_server_restart_and_is_adopted(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.05")
    first = JobService(settings)
    await first.start()
    make_dataset(first.workspace.training_data / "faces", 1)
    job = first.submit_training(train_params(steps=60))
    while not first.get(job.id).pid:
        await asyncio.sleep(0.02)
    await first.close()  # the server goes away; the trainer is in its own session and keeps going

    second = JobService(settings)
    await second.start()
    try:
        assert second.get(job.id).status == JobStatus.running
        final = await second.wait(job.id, timeout=60)
        assert final.status == JobStatus.completed, final.error
        assert final.step == 60
    finally:
        await second.close()


async def test_idempotency_key_returns_the_same_job(service: JobService, dataset: Path) -> None:
    first = service.submit_training(train_params(), idempotency_key="abc")
    again = service.submit_training(train_params(), idempotency_key="abc")
    assert again.id == first.id
    jobs, _ = service.list()
    assert [j.id for j in jobs] == [first.id]


async def test_listing_is_newest_first_and_paged(service: JobService, dataset: Path) -> None:
    ids = [service.submit_training(train_params()).id for _ in range(5)]
    page1, cursor = service.list(limit=2)
    page2, cursor2 = service.list(limit=2, cursor=cursor)
    service.submit_training(train_params())  # an insert between pages does not shift them
    page3, cursor3 = service.list(limit=2, cursor=cursor2)
    assert [j.id for j in page1 + page2 + page3] == list(reversed(ids))
    assert cursor3 is None
    only_train, _ = service.list(job_type="train", status="queued", limit=50)
    assert all(j.type == "train" for j in only_train)


async def test_errors(service: JobService, tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        service.get("train_ffffffffffff")
    svc = JobService(make_settings(tmp_path / "other", ai_toolkit_dir=None))
    with pytest.raises(Unavailable):
        svc.submit_training(train_params())


async def test_delete_with_files(service: JobService, dataset: Path) -> None:
    job = service.submit_training(train_params(steps=3))
    with pytest.raises(Conflict):
        service.delete(job.id)
    final = await service.wait(job.id, timeout=60)
    out = service.workspace.root / str(final.output_dir)
    assert out.is_dir()
    service.delete(job.id, files=True)
    assert not out.exists()
    with pytest.raises(NotFound):
        service.get(job.id)
