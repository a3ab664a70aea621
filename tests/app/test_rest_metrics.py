"""Loss history end to end: GET /jobs/{id}/metrics, the `metrics` SSE event, process_status with metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from core.settings import Settings
from tests.app.test_rest_jobs import TERMINAL, TRAIN, wait_for
from tests.fakes.trainer import make_dataset
from tests.helpers import parse_sse


@pytest.fixture(autouse=True)
def faces(settings: Settings) -> None:
    """A two-image dataset 'faces' in the test's workspace."""
    make_dataset(Path(settings.workspace) / "training_data" / "faces", 2)


def test_a_training_keeps_its_loss_per_step(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    # Slow enough that several progress reads (every 0.1 s in tests) see the bar between start and end.
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.05")
    job = client.post("/jobs", json=TRAIN).json()
    done = wait_for(client, job["id"], TERMINAL)
    assert done["status"] == "completed", done["error"]
    metrics = client.get(f"/jobs/{job['id']}/metrics").json()
    assert metrics["phase"] == "completed"
    points = metrics["points"]
    steps = [p["step"] for p in points]
    assert steps == sorted(set(steps)) and steps[-1] == 12
    assert len({p["loss"] for p in points}) > 1  # the stand-in's loss varies per step
    lr = done["params"]["learning_rate"]
    assert all(p["lr"] == pytest.approx(lr, rel=0.05) for p in points)
    # The last point is the final loss the job reports.
    assert points[-1]["loss"] == pytest.approx(done["progress"]["loss"])
    later = client.get(f"/jobs/{job['id']}/metrics", params={"since_step": steps[-2]}).json()["points"]
    assert later == points[-1:]
    assert client.get(f"/jobs/{job['id']}/metrics", params={"since_step": "x"}).status_code == 422
    assert client.get("/jobs/train_000000000000/metrics").status_code == 404


def test_events_carry_new_loss_points(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.05")
    job = client.post("/jobs", json=TRAIN).json()
    events = parse_sse(client.get(f"/jobs/{job['id']}/events").text)
    metrics = [e["data"] for e in events if e["event"] == "metrics"]
    assert metrics[0]["phase"] in {"queued", "starting", "training"}
    assert metrics[-1]["phase"] == "completed"
    sent = [p["step"] for m in metrics for p in m["points"]]
    assert sent == sorted(set(sent)), "a point was sent twice or out of order"
    stored = client.get(f"/jobs/{job['id']}/metrics").json()["points"]
    assert sent[-1] == stored[-1]["step"] == 12
    assert len([m for m in metrics if m["points"]]) >= 2  # points arrived while it ran, not only at the end
    assert "training" in {m["phase"] for m in metrics}
    # The end event still closes the stream, after the final metrics.
    names = [e["event"] for e in events]
    assert names[-1] == "end" and names.index("end") > max(i for i, n in enumerate(names) if n == "metrics")


def test_process_status_includes_metrics_on_request(client: TestClient) -> None:
    job = client.post("/jobs", json=TRAIN).json()
    wait_for(client, job["id"], TERMINAL)
    call = {"input": {"type": "process_status", "process_id": job["id"]}}
    plain = client.post("/v2/lorapod/runsync", json=call).json()["output"]
    assert "metrics" not in plain
    call["input"] |= {"metrics": True, "since_step": 10}
    rich = client.post("/v2/lorapod/runsync", json=call).json()["output"]
    assert rich["metrics"]["phase"] == "completed"
    stored = client.get(f"/jobs/{job['id']}/metrics").json()["points"]
    assert rich["metrics"]["points"] == [p for p in stored if p["step"] > 10]
    assert rich["metrics"]["points"][-1]["step"] == 12
    call["input"]["metrics"] = "lots"
    bad = client.post("/v2/lorapod/runsync", json=call).json()
    assert "metrics" in bad["error"]


def test_the_trainers_own_loss_log_is_read_when_enabled(client: TestClient) -> None:
    job = client.post("/jobs", json=TRAIN).json()
    wait_for(client, job["id"], TERMINAL)
    config: dict[str, Any] = yaml.safe_load(client.get(f"/jobs/{job['id']}/artifacts/config.yaml").text)
    config["config"]["name"] = "faces_logged"
    config["config"]["process"][0]["logging"]["use_ui_logger"] = True
    config["config"]["process"][0].pop("training_folder", None)
    logged = client.post("/jobs", json={"type": "train_with_yaml", "yaml_config": yaml.safe_dump(config)})
    assert logged.status_code == 202, logged.text
    done = wait_for(client, logged.json()["id"], TERMINAL)
    assert done["status"] == "completed", done["error"]
    points = client.get(f"/jobs/{done['id']}/metrics").json()["points"]
    assert [p["step"] for p in points] == list(range(1, 13))  # every step, from the log, none skipped
    # The bar shows 4 significant digits; values it cannot show came from loss_log.db.
    assert all(p["loss"] != float(f"{p['loss']:.3e}") for p in points)
