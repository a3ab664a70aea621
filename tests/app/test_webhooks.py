"""Webhooks over real HTTP: a uvicorn server POSTs to a receiver on loopback that verifies every signature with
the `standardwebhooks` library; retries, recorded attempts, progress, the /v2 `webhook`, refusals, no secret leak."""

from __future__ import annotations

import base64
import json
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.settings import Settings
from tests.fakes.trainer import make_dataset
from tests.helpers import LiveServer, WebhookReceiver, make_settings

SECRET = "whsec_" + base64.b64encode(b"lorapod-test-webhook-key-32bytes").decode()
TRAIN: dict[str, Any] = {"type": "train", "training_name": "faces", "base_model": "sd15", "steps": 6, "save_every": 3}
TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(
        tmp_path,
        webhook_secret=SECRET,
        webhook_allow_private=True,  # the receiver is on loopback
        webhook_backoff_seconds=0.05,
        webhook_progress_seconds=0.0,
    )


@pytest.fixture(autouse=True)
def faces(settings: Settings) -> None:
    make_dataset(Path(settings.workspace) / "training_data" / "faces", 2)


def finished(http: httpx.Client, job_id: str, until: Any = None, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/jobs/{job_id}").json()
        if job["status"] in TERMINAL and (until is None or until(job)):
            return job
        assert time.monotonic() < deadline, f"{job_id} still {job['status']} {job['webhook']}"
        time.sleep(0.05)


def delivered(job: dict[str, Any]) -> bool:
    return job["webhook"]["state"] in ("delivered", "failed")


def test_the_final_job_is_posted_signed(http: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with WebhookReceiver(SECRET) as receiver:
        job = http.post("/jobs", json={**TRAIN, "webhook": receiver.url}).json()
        assert job["webhook"] == {"url": receiver.url, "progress": False, "state": "pending", "attempts": []}
        done = finished(http, job["id"], delivered)
        messages = receiver.wait_for(lambda m: len(m) >= 1)
    assert len(messages) == 1
    message = messages[0]
    assert message["verified"] is True
    assert message["json"]["type"] == "job.completed"
    assert message["json"]["data"]["id"] == job["id"] and message["json"]["data"]["status"] == "completed"
    assert message["headers"]["webhook-id"] == f"msg_{job['id']}_completed"
    assert done["webhook"]["state"] == "delivered"
    [attempt] = done["webhook"]["attempts"]
    assert attempt["status_code"] == 200 and attempt["error"] is None and attempt["attempt"] == 1
    assert attempt["event"] == "job.completed" and attempt["at"].endswith("Z")
    key = SECRET.removeprefix("whsec_")
    everything = json.dumps(done) + caplog.text + http.get(f"/jobs/{job['id']}/logs").text
    assert SECRET not in everything and key not in everything


def test_a_failing_receiver_is_retried_with_backoff_and_every_attempt_recorded(http: httpx.Client) -> None:
    with WebhookReceiver(SECRET, answers=(500, 503, 204)) as receiver:
        job = http.post("/jobs", json={**TRAIN, "webhook": receiver.url}).json()
        done = finished(http, job["id"], lambda j: j["webhook"]["state"] == "delivered")
        messages = receiver.messages()
    assert [a["status_code"] for a in done["webhook"]["attempts"]] == [500, 503, 204]
    assert [a["error"] for a in done["webhook"]["attempts"]] == ["answered HTTP 500", "answered HTTP 503", None]
    assert len({m["headers"]["webhook-id"] for m in messages}) == 1  # one message, retried
    assert all(m["verified"] for m in messages)


def test_an_unreachable_receiver_ends_failed_with_its_errors(http: httpx.Client, settings: Settings) -> None:
    with WebhookReceiver(SECRET) as receiver:
        url = receiver.url
    job = http.post("/jobs", json={**TRAIN, "webhook": url}).json()  # nobody listens there any more
    done = finished(http, job["id"], lambda j: j["webhook"]["state"] == "failed", timeout=90)
    attempts = done["webhook"]["attempts"]
    assert len(attempts) == settings.webhook_attempts
    assert all(a["status_code"] is None and "ConnectionRefused" in a["error"] for a in attempts)
    assert done["status"] == "completed"  # a webhook never changes the job's own outcome


def test_progress_is_posted_when_asked_and_the_final_message_comes_last(
    http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.05")
    with WebhookReceiver(SECRET) as receiver:
        job = http.post("/jobs", json={**TRAIN, "steps": 40, "webhook": receiver.url, "webhook_progress": True})
        finished(http, job.json()["id"], delivered)
        messages = receiver.messages()
    kinds = [m["json"]["type"] for m in messages]
    assert "job.progress" in kinds and kinds[-1] == "job.completed"
    assert all(m["verified"] for m in messages)
    assert kinds.count("job.completed") == 1


def test_the_v2_webhook_gets_the_status_body_and_job_types_take_webhook(http: httpx.Client) -> None:
    with WebhookReceiver(SECRET) as receiver:
        call = http.post("/v2/ep/runsync", json={"input": {"type": "health"}, "webhook": receiver.url}).json()
        messages = receiver.wait_for(lambda m: len(m) >= 1)
        assert messages[0]["verified"] and messages[0]["json"]["id"] == call["id"]
        assert messages[0]["json"]["status"] == "COMPLETED"
        train = http.post(
            "/v2/ep/run", json={"input": {**TRAIN, "wait": False, "webhook": receiver.url, "webhook_progress": False}}
        ).json()
        receiver.wait_for(lambda m: any(x["json"].get("type") == "job.completed" for x in m))
    assert train["status"] == "IN_QUEUE"


def test_webhooks_without_a_secret_are_refused(tmp_path: Path) -> None:
    server = LiveServer(make_settings(tmp_path, webhook_allow_private=True)).start()
    try:
        make_dataset(tmp_path / "workspace" / "training_data" / "faces", 1)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            rest = client.post("/jobs", json={**TRAIN, "webhook": "https://example.com/hook"})
            assert rest.status_code == 422 and rest.json()["field"] == "webhook"
            assert "LORAPOD_WEBHOOK_SECRET" in rest.json()["error"]
            v2 = client.post("/v2/ep/run", json={"input": {"type": "health"}, "webhook": "https://example.com/h"})
            assert v2.status_code == 400 and v2.json()["error"].startswith("webhook:")
    finally:
        server.stop()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:8080/x",
        "http://[::1]/x",
        "http://10.1.2.3/x",
        "http://192.168.0.10/x",
        "http://169.254.169.254/latest/meta-data",
        "http://2130706433/x",
        "http://[::ffff:127.0.0.1]/x",
        "ftp://example.com/x",
        "https://user:pw@example.com/x",
        "not a url",
    ],
)
def test_private_and_malformed_targets_are_refused(tmp_path: Path, url: str) -> None:
    server = LiveServer(make_settings(tmp_path, webhook_secret=SECRET)).start()
    try:
        make_dataset(tmp_path / "workspace" / "training_data" / "faces", 1)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            rest = client.post("/jobs", json={**TRAIN, "webhook": url})
            assert rest.status_code == 422 and rest.json()["field"] == "webhook", rest.text
            v2 = client.post("/v2/ep/run", json={"input": {"type": "health"}, "webhook": url})
            assert v2.status_code == 400 and v2.json()["error"].startswith("webhook:")
            assert client.get("/jobs").json()["data"] == []
    finally:
        server.stop()


def test_a_final_message_still_pending_at_a_restart_is_sent_at_the_next_start(settings: Settings) -> None:
    from core.db import make_engine
    from core.jobs.rows import Job, JobStatus, JobType, utcnow
    from core.jobs.store import JobStore

    LiveServer(settings).start().stop()  # creates and migrates the database
    with WebhookReceiver(SECRET) as receiver:
        store = JobStore(make_engine(settings.effective_database_url))
        store.insert(
            Job(
                id="train_00000000aaaa",
                type=JobType.train,
                status=JobStatus.completed,
                name="left",
                finished_at=utcnow(),
                webhook={"url": receiver.url, "progress": False, "state": "pending", "attempts": []},
            )
        )
        server = LiveServer(settings).start()
        try:
            messages = receiver.wait_for(lambda m: len(m) >= 1)
            with httpx.Client(base_url=server.url, timeout=30) as client:
                job = finished(client, "train_00000000aaaa", lambda j: j["webhook"]["state"] == "delivered")
        finally:
            server.stop()
    assert messages[0]["verified"] and messages[0]["headers"]["webhook-id"] == "msg_train_00000000aaaa_completed"
    assert len(job["webhook"]["attempts"]) == 1
