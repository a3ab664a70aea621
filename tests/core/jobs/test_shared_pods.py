"""Pods share the database, not their disks: the record names the pod holding a job's files, downloads on
another pod answer a clear error naming it, a delete with files reaches the pod that has them, and one
pod's changes wake waiters on the others."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.contract.dispatcher import dispatch
from core.contract.views import job_view
from core.errors import OutputsElsewhere
from core.jobs.rows import Job, JobStatus, JobType, utcnow
from core.jobs.service import JobService
from core.settings import Settings
from tests.helpers import make_settings, running_app

JOB_ID = "train_0000000000b2"


def ran_on_pod_b(service: JobService) -> Job:
    """A finished job the record says pod-b ran, with a LoRA in pod-b's output folder."""
    job = Job(
        id=JOB_ID,
        type=JobType.train,
        status=JobStatus.completed,
        name="faces",
        worker_id="pod-b",
        finished_at=utcnow(),
        output_dir=f"output/{JOB_ID}",
        log_path=f"logs/{JOB_ID}.log",
        config={"name": "faces", "save_root": f"output/{JOB_ID}"},
        artifacts=[
            {"name": "faces.safetensors", "kind": "lora", "path": f"output/{JOB_ID}/faces.safetensors", "size": 4}
        ],
    )
    return service.store.insert(job)


@pytest.fixture
def pod_a(tmp_path: Path, database_url: str | None) -> Settings:
    return make_settings(tmp_path / "a", database_url=database_url, worker_id="pod-a")


def test_a_download_on_another_pod_names_the_pod(pod_a: Settings) -> None:
    with running_app(pod_a) as client:
        ran_on_pod_b(client.app.state.service)
        record = client.get(f"/jobs/{JOB_ID}").json()
        assert record["outputs_on"] == "pod-b"
        for path in (f"/jobs/{JOB_ID}/artifacts/faces.safetensors", f"/jobs/{JOB_ID}/artifacts"):
            answer = client.get(path)
            assert answer.status_code == 409, answer.text
            body = answer.json()
            assert body["field"] == "job_id" and "'pod-b'" in body["error"]


async def test_contract_downloads_on_another_pod_name_the_pod(pod_a: Settings) -> None:
    service = JobService(pod_a)
    await service.start()
    try:
        ran_on_pod_b(service)
        assert job_view(service.get(JOB_ID))["outputs_on"] == "pod-b"
        for payload in (
            {"type": "download", "process_id": JOB_ID},
            {"type": "bulk_download", "process_id": JOB_ID},
        ):
            out = await dispatch(service, payload)
            assert out["error"].startswith("process_id: ") and "'pod-b'" in out["error"], out
    finally:
        await service.close()


async def test_a_shared_volume_serves_another_pods_outputs(pod_a: Settings) -> None:
    service = JobService(pod_a)
    await service.start()
    try:
        job = ran_on_pod_b(service)
        lora = service.workspace.root / f"output/{JOB_ID}/faces.safetensors"
        lora.parent.mkdir(parents=True)
        lora.write_bytes(b"x" * 16)  # pod-b's folder is visible here: one volume mounted on both pods
        found = service.find_artifact(job, "faces.safetensors")
        assert found is not None and found["size"] == 16
    finally:
        await service.close()


@pytest.fixture
async def two_pods(tmp_path: Path) -> AsyncIterator[tuple[JobService, JobService]]:
    from tests.helpers import fresh_postgres

    with fresh_postgres() as url:
        a = JobService(make_settings(tmp_path / "a", database_url=url, worker_id="pod-a"))
        b = JobService(make_settings(tmp_path / "b", database_url=url, worker_id="pod-b"))
        await a.start()
        await b.start()
        try:
            yield a, b
        finally:
            await a.close()
            await b.close()
            a.engine.dispose()
            b.engine.dispose()


async def test_delete_with_files_on_another_pod_removes_them_there(two_pods: tuple[JobService, JobService]) -> None:
    a, b = two_pods
    ran_on_pod_b(a)
    folder = b.workspace.root / f"output/{JOB_ID}"
    folder.mkdir(parents=True)
    (folder / "faces.safetensors").write_bytes(b"lora")
    log = b.workspace.root / f"logs/{JOB_ID}.log"
    log.write_text("done\n")
    with pytest.raises(OutputsElsewhere):
        a.current_artifacts(a.get(JOB_ID))

    a.delete(JOB_ID, files=True)
    for _ in range(200):  # pod-b hears the delete on the jobs channel
        if not folder.exists() and not log.exists():
            break
        await asyncio.sleep(0.05)
    assert not folder.exists() and not log.exists()
    assert b.store.find(JOB_ID) is None


async def test_another_pods_change_wakes_waiters_here(two_pods: tuple[JobService, JobService]) -> None:
    a, b = two_pods
    ran_on_pod_b(a)
    # nothing on pod-b writes this job: only pod-a's announcement can wake the waiter before its timeout
    waiter = asyncio.create_task(b.notifier.wait(JOB_ID, timeout=30))
    await asyncio.sleep(0.2)
    a.store.update(JOB_ID, step=5)
    assert await waiter is True
    assert b.get(JOB_ID).step == 5
