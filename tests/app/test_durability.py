"""What the server acknowledged survives `kill -9`: a submitted job and every answered /run call, after a restart."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from app.calls.store import INTERRUPTED
from tests.app.test_serve_shutdown import AUTH, Served
from tests.fakes.trainer import make_dataset

TRAIN = {"type": "train", "training_name": "faces", "base_model": "sd15", "steps": 40, "save_every": 1000}
CALLS = 48


def test_an_acknowledged_job_and_run_calls_survive_kill_9(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    make_dataset(workspace / "training_data" / "faces", 2)
    first = Served(workspace, FAKE_AITK_STEP_SECONDS="0.1")
    try:
        job = httpx.post(f"{first.url}/jobs", json=TRAIN, headers=AUTH, timeout=10)
        assert job.status_code == 202, job.text
        # A /run call still queued behind a running training, then many at once so that they share commits.
        with httpx.Client(base_url=f"{first.url}/v2/x", headers=AUTH, timeout=30) as api:
            training_call = api.post("/run", json={"input": {**TRAIN, "steps": 5}}).json()["id"]

            def run_health(_: int) -> str:
                answer = api.post("/run", json={"input": {"type": "health"}})
                assert answer.status_code == 200 and answer.json()["status"] == "IN_QUEUE", answer.text
                return str(answer.json()["id"])

            with ThreadPoolExecutor(8) as pool:
                acknowledged = list(pool.map(run_health, range(CALLS)))
        first.process.kill()  # SIGKILL right after the last answer: nothing gets to flush or shut down
        first.process.wait(timeout=10)
    finally:
        first.kill()

    second = Served(workspace)
    try:
        with httpx.Client(base_url=second.url, headers=AUTH, timeout=30) as api:
            states = {call_id: api.get(f"/v2/x/status/{call_id}") for call_id in acknowledged}
            assert all(state.status_code == 200 for state in states.values()), states
            # Health calls that ended before the kill are COMPLETED; any still unfinished is FAILED by the restart.
            for call_id, state in states.items():
                body = state.json()
                assert body["id"] == call_id and body["status"] in ("COMPLETED", "FAILED"), body
                assert body["status"] == "COMPLETED" or body["error"] == INTERRUPTED, body
            interrupted = api.get(f"/v2/x/status/{training_call}").json()
            assert interrupted["status"] == "FAILED" and interrupted["error"] == INTERRUPTED

            # The job's trainer outlived the server in its own session: adopted, it runs to the end.
            job_id = job.json()["id"]
            deadline = time.monotonic() + 60
            while (status := api.get(f"/jobs/{job_id}").json()["status"]) != "completed":
                assert status in ("queued", "running") and time.monotonic() < deadline, status
                time.sleep(0.1)
    finally:
        second.kill()
