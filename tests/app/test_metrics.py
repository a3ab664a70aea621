"""/metrics on a real server, read with prometheus_client's text parser: counters never go backwards."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fakes.trainer import make_dataset
from tests.helpers import LiveServer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
TRAIN = {"type": "train", "training_name": "faces", "base_model": "sd15", "steps": 3, "save_every": 2}


def scrape(url: str) -> tuple[Samples, dict[str, str]]:
    """Every sample of /metrics keyed by (name, labels), and each family's type, as Prometheus parses them."""
    response = httpx.get(f"{url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            types[sample.name] = family.type
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist yet (as Prometheus would read a new series)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_finished(client: httpx.Client, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 60
    while True:
        job = client.get(f"/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.05)


def test_counters_only_grow_across_deletes(live_server: LiveServer) -> None:
    make_dataset(Path(live_server.settings.workspace) / "training_data" / "faces", 2)
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        ids = [client.post("/jobs", json=TRAIN).json()["id"] for _ in range(2)]
        assert [wait_finished(client, job_id)["status"] for job_id in ids] == ["completed", "completed"]
        before, types = scrape(live_server.url)

        assert value(before, "lorapod_jobs_submitted_total", type="train") == 2
        assert value(before, "lorapod_jobs_finished_total", type="train", status="completed") == 2
        assert value(before, "lorapod_trainer_exits_total", cause="completed") == 2
        assert value(before, "lorapod_job_queue_wait_seconds_count", type="train") == 2
        assert value(before, "lorapod_job_run_seconds_count", type="train", status="completed") == 2
        assert value(before, "lorapod_job_first_progress_seconds_count", type="train") == 2
        assert value(before, "lorapod_jobs", status="completed") == 2  # a gauge: the table as it is
        assert value(before, "lorapod_gpu_slots_total") == 1 and value(before, "lorapod_queue_depth") == 0
        assert value(before, "lorapod_workspace_free_bytes") > 0
        posts = value(before, "lorapod_http_requests_total", method="POST", route="/jobs", status="202")
        assert posts == 2

        for job_id in ids:
            assert client.delete(f"/jobs/{job_id}", params={"files": "true"}).status_code == 204
        assert client.get("/nowhere/at/all").status_code == 404
        after, _ = scrape(live_server.url)

    # Counters and histogram series never fall, whatever happened to the table.
    monotonic = {name for name, kind in types.items() if kind in ("counter", "histogram")}
    for key, seen in before.items():
        name = key[0]
        if name in monotonic and not name.endswith("_created"):
            assert after.get(key, 0.0) >= seen, (key, seen, after.get(key))
    assert value(after, "lorapod_jobs_finished_total", type="train", status="completed") == 2
    assert value(after, "lorapod_jobs", status="completed") == 0  # the gauge follows the table down
    # Requests are labelled by route template, never by raw path: one series for every job id.
    deletes = value(after, "lorapod_http_requests_total", method="DELETE", route="/jobs/{job_id}", status="204")
    assert deletes == 2
    assert value(after, "lorapod_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert value(after, "lorapod_http_request_duration_seconds_count", method="POST", route="/jobs") == 2
    assert not any(job_id in str(key) for key in after for job_id in ids)


def test_runpod_calls_counted_by_final_status(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        assert client.post("/v2/pod/runsync", json={"input": {"type": "health"}}).json()["status"] == "COMPLETED"
        assert client.post("/v2/pod/runsync", json={"input": {"type": "nope"}}).json()["status"] == "FAILED"
        assert client.post("/v2/pod/runsync", json={"input": {"type": "health"}}).json()["status"] == "COMPLETED"
    samples, types = scrape(live_server.url)
    assert types["lorapod_runpod_calls_finished_total"] == "counter"
    assert value(samples, "lorapod_runpod_calls_finished_total", status="COMPLETED") == 2
    assert value(samples, "lorapod_runpod_calls_finished_total", status="FAILED") == 1


def test_cancelled_queued_job_counts_as_finished(live_server: LiveServer) -> None:
    make_dataset(Path(live_server.settings.workspace) / "training_data" / "faces", 2)
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        # One slot: the second job waits in the queue behind a long first one, and is cancelled there.
        first = client.post("/jobs", json={**TRAIN, "steps": 400}).json()["id"]
        second = client.post("/jobs", json=TRAIN).json()["id"]
        deadline = time.monotonic() + 30
        while not (client.get(f"/jobs/{first}").json()["progress"]["step"] or 0):  # the trainer is running
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.post(f"/jobs/{second}/cancel").json()["status"] == "cancelled"
        client.post(f"/jobs/{first}/cancel")
        assert wait_finished(client, first)["status"] == "cancelled"
    samples, _ = scrape(live_server.url)
    assert value(samples, "lorapod_jobs_submitted_total", type="train") == 2
    assert value(samples, "lorapod_jobs_finished_total", type="train", status="cancelled") == 2
    assert value(samples, "lorapod_trainer_exits_total", cause="cancelled") == 1
    # Only the job that ran has a run time; the one cancelled in the queue never started.
    assert value(samples, "lorapod_job_run_seconds_count", type="train", status="cancelled") == 1
