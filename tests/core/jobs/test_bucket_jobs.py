"""Jobs with a bucket (a real S3-compatible server): artifacts uploaded as they appear, records beside them,
downloads by pre-signed URL from another worker, base64 ranges read from the bucket, bundles, vanished objects."""

from __future__ import annotations

import base64
import hashlib
import io
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.contract.dispatcher import dispatch
from core.errors import NotFound
from core.jobs.rows import JobStatus
from core.jobs.service import JobService
from core.storage.objects import StorageError
from tests.fakes.trainer import make_dataset
from tests.helpers import make_settings, running_app, train_params
from tests.s3server import SECRET_KEY, S3Server


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.new_bucket()


async def started(tmp_path: Path, name: str, s3_server: S3Server, bucket: str) -> JobService:
    service = JobService(make_settings(tmp_path / name, **s3_server.settings(bucket, prefix="team-a")))
    await service.start()
    return service


@pytest.fixture
async def trainer_and_reader(
    tmp_path: Path, s3_server: S3Server, bucket: str
) -> AsyncIterator[tuple[JobService, JobService]]:
    """Two services with separate workspaces and databases sharing one bucket."""
    first = await started(tmp_path, "one", s3_server, bucket)
    second = await started(tmp_path, "two", s3_server, bucket)
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def trained(service: JobService) -> Any:
    make_dataset(service.workspace.training_data / "faces", 2)
    service.datasets.publish("faces")  # type: ignore[attr-defined]
    job = service.submit_training(train_params())
    final = await service.wait(job.id, timeout=60)
    assert final.status == JobStatus.completed, final.error
    return final


async def test_every_artifact_is_in_the_bucket_with_key_size_and_sha256(
    trainer_and_reader: tuple[JobService, JobService], s3_server: S3Server, bucket: str
) -> None:
    service, _ = trainer_and_reader
    final = await trained(service)
    client = s3_server.client()
    kinds = {a["kind"] for a in final.artifacts}
    assert {"lora", "checkpoint", "sample", "config", "log"} <= kinds
    for artifact in final.artifacts:
        obj = artifact["object"]
        local = (service.workspace.root / artifact["path"]).read_bytes()
        assert obj["key"] == f"team-a/jobs/{final.id}/{artifact['name']}"
        assert obj["size"] == len(local) == artifact["size"]
        assert obj["sha256"] == sha256(local)
        assert client.get_object(Bucket=bucket, Key=obj["key"])["Body"].read() == local
    record = client.get_object(Bucket=bucket, Key=f"team-a/jobs/{final.id}/job.json")["Body"].read().decode()
    assert '"status": "completed"' in record and SECRET_KEY not in record


async def test_another_worker_reads_the_record_and_downloads_by_url_or_base64(
    trainer_and_reader: tuple[JobService, JobService],
) -> None:
    service, other = trainer_and_reader
    final = await trained(service)
    lora = next(a for a in final.artifacts if a["kind"] == "lora")
    expected = (service.workspace.root / lora["path"]).read_bytes()
    assert not (other.workspace.root / lora["path"]).exists()

    status = await dispatch(other, {"type": "process_status", "process_id": final.id})
    assert status["status"] == "completed" and status["id"] == final.id

    answer = await dispatch(other, {"type": "download", "process_id": final.id})
    assert answer["delivery"] == "url" and answer["size"] == len(expected) and answer["sha256"] == sha256(expected)
    assert answer["expires_in"] == 3600 and answer["artifact"] == lora["name"]
    assert httpx.get(answer["url"]).content == expected

    # base64 on request, read by range from the bucket (this worker has no copy)
    pieces, offset = [], 0
    while True:
        chunk = await dispatch(
            other, {"type": "download", "process_id": final.id, "delivery": "base64", "offset": offset, "length": 1000}
        )
        pieces.append(base64.b64decode(chunk["content"]))
        if chunk["done"]:
            break
        offset = chunk["next_offset"]
    assert b"".join(pieces) == expected and chunk["sha256"] == sha256(expected)

    by_path = await dispatch(other, {"type": "download_file", "file_path": lora["path"]})
    assert httpx.get(by_path["url"]).content == expected


async def test_bulk_download_of_a_process_is_a_zip_in_the_bucket(
    trainer_and_reader: tuple[JobService, JobService],
) -> None:
    service, other = trainer_and_reader
    final = await trained(service)
    answer = await dispatch(other, {"type": "bulk_download", "process_id": final.id})
    assert "error" not in answer, answer
    archive = zipfile.ZipFile(io.BytesIO(httpx.get(answer["url"]).content))
    assert answer["files"] == len(final.artifacts)
    for artifact in final.artifacts:
        assert archive.read(artifact["path"]) == (service.workspace.root / artifact["path"]).read_bytes()


async def test_a_vanished_object_is_named_in_the_error(
    trainer_and_reader: tuple[JobService, JobService], s3_server: S3Server, bucket: str
) -> None:
    service, other = trainer_and_reader
    final = await trained(service)
    lora = next(a for a in final.artifacts if a["kind"] == "lora")
    s3_server.client().delete_object(Bucket=bucket, Key=lora["object"]["key"])
    answer = await dispatch(other, {"type": "download", "process_id": final.id})
    assert answer == {"error": f"storage: object '{lora['object']['key']}' is missing from bucket '{bucket}'"}


async def test_a_bucket_that_vanished_fails_the_training_naming_it(
    tmp_path: Path, s3_server: S3Server, bucket: str
) -> None:
    service = await started(tmp_path, "gone", s3_server, bucket)
    try:
        make_dataset(service.workspace.training_data / "faces", 2)
        service.datasets.publish("faces")  # type: ignore[attr-defined]
        client = s3_server.client()
        keys = [{"Key": item["Key"]} for item in client.list_objects_v2(Bucket=bucket)["Contents"]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=bucket)
        job = service.submit_training(train_params())
        final = await service.wait(job.id, timeout=60)
        health = service.health()
    finally:
        await service.close()
    assert final.status == JobStatus.failed and final.error is not None
    assert f"bucket '{bucket}' does not exist at {s3_server.url}" in final.error
    assert health["status"] == "degraded" and health["storage"]["ok"] is False
    assert f"bucket '{bucket}' does not exist" in health["storage"]["error"]


async def test_an_artifact_that_cannot_be_stored_fails_the_finished_job(
    tmp_path: Path, s3_server: S3Server, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = await started(tmp_path, "refuses", s3_server, bucket)
    objects = service.objects
    assert objects is not None
    real_put = objects.put_file

    def put_file(key: str, path: Path, **kwargs: Any) -> Any:
        # The connection drops on the final LoRA's upload; everything else goes through the real server.
        if key.endswith("/faces.safetensors"):
            raise StorageError(f"upload of '{key}': cannot reach {s3_server.url}: ConnectionClosedError")
        return real_put(key, path, **kwargs)

    try:
        make_dataset(service.workspace.training_data / "faces", 2)
        service.datasets.publish("faces")  # type: ignore[attr-defined]
        monkeypatch.setattr(objects, "put_file", put_file)
        job = service.submit_training(train_params(name="faces"))
        final = await service.wait(job.id, timeout=60)
    finally:
        await service.close()
    assert final.status == JobStatus.failed and final.error is not None
    assert final.error.startswith("the job finished but its files could not be stored: 1 artifact(s)")
    assert "faces.safetensors" in final.error
    lora = next(a for a in final.artifacts if a["kind"] == "lora")
    assert "object" not in lora  # never recorded as stored
    assert all("object" in a for a in final.artifacts if a["kind"] == "checkpoint")


async def test_rest_artifact_downloads_redirect_to_the_bucket_or_answer_json(
    trainer_and_reader: tuple[JobService, JobService],
) -> None:
    service, other = trainer_and_reader
    final = await trained(service)
    lora = next(a for a in final.artifacts if a["kind"] == "lora")
    expected = (service.workspace.root / lora["path"]).read_bytes()
    with running_app(other.settings) as client:  # the REST app on the second worker's workspace
        moved = client.get(f"/jobs/{final.id}/artifacts/{lora['name']}", follow_redirects=False)
        assert moved.status_code == 307
        assert httpx.get(moved.headers["location"]).content == expected
        as_json = client.get(f"/jobs/{final.id}/artifacts/{lora['name']}", params={"redirect": "false"}).json()
        assert as_json["sha256"] == sha256(expected) and httpx.get(as_json["url"]).content == expected
        listed = client.get(f"/jobs/{final.id}/artifacts").json()["data"]
        assert {a["name"] for a in listed} == {a["name"] for a in final.artifacts}


async def test_checkpoints_the_trainer_prunes_leave_the_bucket_too(
    trainer_and_reader: tuple[JobService, JobService], s3_server: S3Server, bucket: str
) -> None:
    service, _ = trainer_and_reader
    make_dataset(service.workspace.training_data / "faces", 2)
    service.datasets.publish("faces")  # type: ignore[attr-defined]
    job = service.submit_training(train_params(steps=12, save_every=3, max_step_saves_to_keep=1))
    final = await service.wait(job.id, timeout=60)
    assert final.status == JobStatus.completed, final.error
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=f"team-a/jobs/{final.id}/")["Contents"]
    keys = {item["Key"].rsplit("/", 1)[-1] for item in listed if "/samples/" not in item["Key"]}
    checkpoints = [a["name"] for a in final.artifacts if a["kind"] == "checkpoint"]
    assert len(checkpoints) == 1
    assert {k for k in keys if k.endswith(".safetensors")} == {*checkpoints, "faces.safetensors"}


async def test_a_training_whose_dataset_left_the_bucket_fails_naming_it(
    trainer_and_reader: tuple[JobService, JobService],
) -> None:
    service, _ = trainer_and_reader
    make_dataset(service.workspace.training_data / "faces", 2)  # on this disk only, never uploaded
    job = service.submit_training(train_params())
    final = await service.wait(job.id, timeout=60)
    assert final.status == JobStatus.failed
    assert final.error == "dataset 'faces' does not exist in the bucket"


async def test_generated_images_go_to_the_bucket(
    trainer_and_reader: tuple[JobService, JobService], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.core.jobs.test_service_generation import gen_params
    from tests.fakes.tiny_sd import build_tiny_sd15

    service, other = trainer_and_reader
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    build_tiny_sd15(service.workspace.models / "tiny-sd15")
    job = service.submit_generation(gen_params("models/tiny-sd15"))
    final = await service.wait(job.id, timeout=120)
    assert final.status == JobStatus.completed, final.error
    images = [a for a in final.artifacts if a["kind"] == "image"]
    assert len(images) == 2
    for image in images:
        local = (service.workspace.root / image["path"]).read_bytes()
        assert image["object"] == {
            "key": f"team-a/jobs/{final.id}/{image['name']}",
            "size": len(local),
            "sha256": sha256(local),
        }
    answer = await dispatch(other, {"type": "download", "process_id": final.id})
    assert answer["artifact"] == "0.png"
    assert httpx.get(answer["url"]).content == (service.workspace.root / images[0]["path"]).read_bytes()


async def test_a_running_jobs_saved_checkpoints_can_be_fetched_from_another_worker(
    trainer_and_reader: tuple[JobService, JobService], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, other = trainer_and_reader
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.05")
    make_dataset(service.workspace.training_data / "faces", 2)
    service.datasets.publish("faces")  # type: ignore[attr-defined]
    job = service.submit_training(train_params(steps=5000, save_every=5, max_step_saves_to_keep=100))

    def stored_checkpoint(seen: Any) -> bool:
        return any(a["kind"] == "checkpoint" and "object" in a for a in seen.artifacts)

    try:
        seen = await other_sees(other, job.id, stored_checkpoint)
        checkpoint = next(a for a in seen.artifacts if a["kind"] == "checkpoint" and "object" in a)
        answer = await dispatch(other, {"type": "download", "process_id": job.id, "artifact": checkpoint["name"]})
        assert httpx.get(answer["url"]).content == (service.workspace.root / checkpoint["path"]).read_bytes()
        assert seen.status == JobStatus.running
    finally:
        service.cancel(job.id)
        await service.wait(job.id, timeout=60)


async def other_sees(other: JobService, job_id: str, condition: Any) -> Any:
    """Poll the other worker's view of a job (from the bucket's record) until condition holds."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + 60
    while True:
        try:
            seen = other.get(job_id)
            if condition(seen):
                return seen
        except NotFound:
            pass
        assert asyncio.get_running_loop().time() < deadline, "the other worker never saw a stored checkpoint"
        await asyncio.sleep(0.1)
