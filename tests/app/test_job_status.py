"""GET /jobs/{job_id}, the status poll: the same bytes FastAPI's response model wrote, and never a stale body."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.main import create_app
from app.routes.job_views import JobBodies, job_out
from app.schemas.jobs import Job as JobOut
from core.db import make_engine, migrate
from core.jobs.rows import Job
from core.jobs.store import JobStore
from tests.helpers import jobs_in_every_state, make_settings, running_app


def response_model_body(job: Job, root_path: str = "") -> bytes:
    """The body a plain FastAPI route with `response_model=JobOut` gives for the job's view (the route as it was)."""
    reference = FastAPI()

    @reference.get("/job", response_model=JobOut)
    def job_route() -> dict[str, Any]:
        return job_out(job, root_path)

    with TestClient(reference) as client:
        return client.get("/job").content


def test_the_body_is_what_the_response_model_wrote_in_every_state(tmp_path: Path) -> None:
    with running_app(make_settings(tmp_path)) as client:
        store: JobStore = client.app.state.service.store  # type: ignore[attr-defined]
        for job in jobs_in_every_state():
            store.insert(job)
        for job in jobs_in_every_state():
            for _ in range(2):  # the second answer comes from the encoded body of the first
                response = client.get(f"/jobs/{job.id}")
                assert response.status_code == 200
                assert response.headers["content-type"] == "application/json"
                assert response.content == response_model_body(store.get(job.id)), job.status


def test_links_carry_the_mount_point(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path)), root_path="/lora") as client:
        job = client.app.state.service.store.insert(jobs_in_every_state()[2])  # type: ignore[attr-defined]
        response = client.get(f"/jobs/{job.id}")
        assert response.content == response_model_body(job, "/lora")
        assert response.json()["links"]["self"] == f"/lora/jobs/{job.id}"


def test_unknown_and_invalid_ids_answer_as_before(tmp_path: Path) -> None:
    with running_app(make_settings(tmp_path)) as client:
        missing = client.get("/jobs/train_000000000999")
        assert missing.status_code == 404
        assert missing.json() == {"error": "no job with id 'train_000000000999'", "field": "job_id"}
        too_long = client.get(f"/jobs/{'x' * 65}")
        assert too_long.status_code == 422 and too_long.json()["field"] == "job_id"


def test_the_key_is_still_required(tmp_path: Path) -> None:
    with running_app(make_settings(tmp_path, api_key="s3cret-key")) as client:
        job = client.app.state.service.store.insert(jobs_in_every_state()[0])  # type: ignore[attr-defined]
        assert client.get(f"/jobs/{job.id}").status_code == 401
        assert client.get(f"/jobs/{job.id}", headers={"Authorization": "Bearer wrong-key"}).status_code == 401
        assert client.get(f"/jobs/{job.id}", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200


def test_another_pods_write_shows_in_the_next_answer(tmp_path: Path, database_url: str | None) -> None:
    settings = make_settings(tmp_path, database_url=database_url)
    with running_app(settings) as client:
        job = client.app.state.service.store.insert(jobs_in_every_state()[1])  # type: ignore[attr-defined]
        assert client.get(f"/jobs/{job.id}").json()["progress"]["step"] == 40
        other_pod = JobStore(make_engine(settings.effective_database_url))
        try:
            other_pod.update(job.id, step=41)
            assert client.get(f"/jobs/{job.id}").json()["progress"]["step"] == 41
            other_pod.update(job.id, status="completed")
            assert client.get(f"/jobs/{job.id}").json()["status"] == "completed"
            other_pod.delete(job.id)
            assert client.get(f"/jobs/{job.id}").status_code == 404
        finally:
            other_pod.engine.dispose()


async def test_job_bodies_are_rebuilt_for_a_changed_row_and_bounded(tmp_path: Path) -> None:
    store = JobStore(make_engine(f"sqlite:///{tmp_path / 'jobs.db'}"))
    migrate(store.engine)
    bodies = JobBodies(size=2)
    jobs = jobs_in_every_state()[:3]
    for job in jobs:
        store.insert(job)
    first = await store.read_row(jobs[0].id)
    assert first is not None
    body = bodies.body(store, jobs[0].id, first, "")
    assert bodies.body(store, jobs[0].id, first, "") is body  # the same row: the same bytes, not encoded again
    store.update(jobs[0].id, step=7)
    changed = await store.read_row(jobs[0].id)
    assert changed is not None
    updated = bodies.body(store, jobs[0].id, changed, "")
    assert updated != body and b'"step":7' in updated  # the row changed: encoded again
    later = {}
    for job in jobs[1:]:
        row = await store.read_row(job.id)
        assert row is not None
        later[job.id] = (row, bodies.body(store, job.id, row, ""))
    # At most two entries: the first job's (the oldest) was dropped, so its body is encoded again ...
    assert bodies.body(store, jobs[0].id, changed, "") is not updated
    # ... while the newest stays.
    row, newest = later[jobs[2].id]
    assert bodies.body(store, jobs[2].id, row, "") is newest
