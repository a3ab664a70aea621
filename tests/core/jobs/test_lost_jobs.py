"""A pod that stopped renewing its leases, on SQLite and PostgreSQL: its job is taken over by another pod,
and when it comes back it adopts what is still its own and stops trainers whose jobs it lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

from core.jobs.leases import WORKER_LOST, LeaseKeeper
from core.jobs.rows import JobStatus, utcnow
from core.jobs.service import JobService
from gpu.adopted import process_matches
from tests.fakes.trainer import make_dataset
from tests.helpers import make_settings, train_params


async def running_with_progress(service: JobService, job_id: str) -> int:
    """The trainer's pid once it has drawn a step."""
    for _ in range(600):
        job = service.get(job_id)
        if job.pid and job.step >= 1:
            return job.pid
        await asyncio.sleep(0.05)
    raise AssertionError(f"{job_id} never started training")


def gone(pid: int, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not process_matches(pid, "run.py"):
            return True
        time.sleep(0.05)
    return False


async def test_a_pod_back_after_losing_its_job_stops_the_orphan_trainer(
    tmp_path: Path, database_url: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.05")
    settings = make_settings(tmp_path, database_url=database_url, lease_seconds=2.0, stop_grace_seconds=2.0)
    first = JobService(settings)
    await first.start()
    make_dataset(first.workspace.training_data / "faces", 1)
    job = first.submit_training(train_params(steps=100000))
    pid = await running_with_progress(first, job.id)
    await first.close()  # the pod goes away; its trainer lives on in its own session
    try:
        # another pod sees the lease lapse (its clock moved on) and takes the job over
        stopped_on_b: list[str] = []
        other = LeaseKeeper(
            store=first.store, worker_id="pod-b", lease_seconds=2.0, running_here=list, stop_here=stopped_on_b.append
        )
        assert other.tick(now=utcnow() + timedelta(seconds=10)) == [job.id]
        lost = first.get(job.id)
        assert lost.status == JobStatus.failed and (lost.error or "").startswith(WORKER_LOST)
        assert stopped_on_b == []  # pod-b never ran it
        assert process_matches(pid, "run.py")

        second = JobService(settings)
        await second.start()
        try:
            assert gone(pid)  # the GPU is free again
            assert second.get(job.id).status == JobStatus.failed  # not adopted: the record is final
        finally:
            await second.close()
    finally:
        if process_matches(pid, "run.py"):
            os.killpg(pid, signal.SIGKILL)
