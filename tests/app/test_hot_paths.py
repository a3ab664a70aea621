"""The hot lane (app/hot_paths.py): it answers status polls and instant /runsync calls as their declared routes
do, byte for byte, and passes everything else on untouched, its body replayed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app import hot_paths
from app.hot_paths import HotPaths
from app.main import create_app
from core.jobs.store import JobStore
from tests.helpers import jobs_in_every_state, make_settings

KEY = "hot-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def app_for(tmp_path: Path, *, lane: bool) -> FastAPI:
    """The app on tmp_path's workspace, with or without the hot lane."""
    app = create_app(make_settings(tmp_path, api_key=KEY), warn_without_key=False)
    if not lane:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not HotPaths]
    return app


@pytest.fixture
def answered(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The requests the lane answered itself (its two answering paths, spied on)."""
    seen: list[str] = []
    job_body, run_sync = hot_paths.stored_job_body, hot_paths.runner_of

    async def spied_body(state: Any, job_id: str, prefix: str) -> bytes | None:
        body = await job_body(state, job_id, prefix)
        if body is not None:
            seen.append(f"job {job_id}")
        return body

    def spied_runner(state: Any) -> Any:
        seen.append("runsync")
        return run_sync(state)

    monkeypatch.setattr(hot_paths, "stored_job_body", spied_body)
    monkeypatch.setattr(hot_paths, "runner_of", spied_runner)
    yield seen


def both(tmp_path: Path, request: Any) -> tuple[Any, Any]:
    """The same request answered with the lane and by the declared routes alone, on the same workspace."""
    answers = []
    for lane in (True, False):
        with TestClient(app_for(tmp_path, lane=lane)) as client:
            answers.append(request(client))
    return answers[0], answers[1]


def test_status_polls_are_answered_by_the_lane_with_the_routes_bytes(tmp_path: Path, answered: list[str]) -> None:
    jobs = jobs_in_every_state()
    with TestClient(app_for(tmp_path, lane=True)) as client:
        store: JobStore = client.app.state.service.store  # type: ignore[attr-defined]
        for job in jobs:
            store.insert(job)
    for job in jobs:
        fast, declared = both(tmp_path, lambda c, job_id=job.id: c.get(f"/jobs/{job_id}", headers=AUTH))
        assert (fast.status_code, fast.content) == (declared.status_code, declared.content) == (200, declared.content)
        assert fast.headers["content-type"] == declared.headers["content-type"] == "application/json"
        assert fast.headers["content-length"] == declared.headers["content-length"]
    assert answered == [f"job {job.id}" for job in jobs]


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/jobs/train_00000000000a", {}, 401),  # no key
        ("/jobs/train_00000000000a", {"Authorization": "Bearer wrong"}, 401),
        ("/jobs/train_000000000999", AUTH, 404),  # unknown
        (f"/jobs/{'x' * 65}", AUTH, 422),  # longer than the route allows
    ],
)
def test_what_the_lane_does_not_answer_gets_the_routes_answer(
    tmp_path: Path, answered: list[str], path: str, headers: dict[str, str], status: int
) -> None:
    with TestClient(app_for(tmp_path, lane=True)) as client:
        client.app.state.service.store.insert(jobs_in_every_state()[0])  # type: ignore[attr-defined]
    fast, declared = both(tmp_path, lambda c: c.get(path, headers=headers))
    assert fast.status_code == declared.status_code == status
    assert fast.content == declared.content and fast.headers.get("www-authenticate") == declared.headers.get(
        "www-authenticate"
    )
    assert answered == []


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """A /runsync answer without what differs from call to call (its id and timings)."""
    return {k: v for k, v in body.items() if k not in ("id", "delayTime", "executionTime")}


def test_an_instant_runsync_is_answered_by_the_lane_as_the_route_answers(tmp_path: Path, answered: list[str]) -> None:
    body = {"input": {"type": "processes", "limit": 5}}
    with TestClient(app_for(tmp_path, lane=True)) as client:
        client.app.state.service.store.insert(jobs_in_every_state()[2])  # type: ignore[attr-defined]
    fast, declared = both(tmp_path, lambda c: c.post("/v2/ep/runsync", json=body, headers=AUTH))
    assert fast.status_code == declared.status_code == 200
    assert list(fast.json()) == list(declared.json())  # the same keys, in the same order (exclude_unset)
    assert comparable(fast.json()) == comparable(declared.json())
    assert fast.json()["status"] == "COMPLETED" and fast.json()["id"].startswith("sync-")
    assert answered == ["runsync"]
    with TestClient(app_for(tmp_path, lane=True)) as client:
        stored = client.get(f"/v2/ep/status/{fast.json()['id']}", headers=AUTH)
        assert stored.status_code == 200 and comparable(stored.json()) == comparable(fast.json())


@pytest.mark.parametrize(
    ("url", "content", "status"),
    [
        ("/v2/ep/runsync", b'{"input": ', 400),  # not JSON: the route reads the replayed body
        ("/v2/ep/runsync", b'{"input": {"type": "nope"}}', 200),  # not instant: the route runs it (FAILED)
        ("/v2/ep/runsync", b'{"input": {"type": "health"}, "policy": 5}', 400),  # the route names the field
        ("/v2/ep/runsync?wait=abc", b'{"input": {"type": "health"}}', 422),  # a query: the route checks it
    ],
)
def test_runsync_bodies_the_lane_passes_on_reach_the_route_whole(
    tmp_path: Path, answered: list[str], url: str, content: bytes, status: int
) -> None:
    headers = {**AUTH, "Content-Type": "application/json"}
    fast, declared = both(tmp_path, lambda c: c.post(url, content=content, headers=headers))
    assert fast.status_code == declared.status_code == status
    assert comparable(fast.json()) == comparable(declared.json())
    assert answered == []


def test_a_chunked_runsync_body_takes_the_route(tmp_path: Path, answered: list[str]) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"input": '
        yield b'{"type": "health"}}'

    with TestClient(app_for(tmp_path, lane=True)) as client:
        answer = client.post("/v2/ep/runsync", content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
    assert answer.status_code == 200 and answer.json()["status"] == "COMPLETED"
    assert answered == []  # no Content-Length: the route counts the body against its limit


def test_the_lanes_answers_are_counted_under_their_routes(tmp_path: Path) -> None:
    with TestClient(app_for(tmp_path, lane=True)) as client:
        job = client.app.state.service.store.insert(jobs_in_every_state()[2])  # type: ignore[attr-defined]
        for _ in range(3):
            assert client.get(f"/jobs/{job.id}", headers=AUTH).status_code == 200
        assert client.post("/v2/ep/runsync", json={"input": {"type": "health"}}, headers=AUTH).status_code == 200
        metrics = client.get("/metrics", headers=AUTH).text
    assert 'lorapod_http_requests_total{method="GET",route="/jobs/{job_id}",status="200"} 3.0' in metrics
    assert 'lorapod_http_requests_total{method="POST",route="/v2/{endpoint_id}/runsync",status="200"} 1.0' in metrics
