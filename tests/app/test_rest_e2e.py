"""The whole flow against a real uvicorn server on loopback, with the stand-in trainer as a real subprocess:
upload a dataset, train, follow /events to the end, download the LoRA, range request, cancel, delete."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.helpers import LiveServer, parse_sse


def image(fmt: str, color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), color).save(buffer, fmt)
    return buffer.getvalue()


def follow(
    client: httpx.Client, url: str, headers: dict[str, str] | None = None, stop_after: int | None = None
) -> list[dict[str, Any]]:
    """Read an event stream as it arrives; stop at its end, or after stop_after events (dropping the connection)."""
    events: list[dict[str, Any]] = []
    buffer = ""
    with client.stream("GET", url, headers=headers, timeout=httpx.Timeout(60, read=30)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for chunk in response.iter_text():
            buffer += chunk
            while "\n\n" in buffer:
                block, buffer = buffer.split("\n\n", 1)
                events += parse_sse(block + "\n\n")
                if stop_after is not None and len(events) >= stop_after:
                    return events
    return events


def test_whole_flow(live_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    workspace = live_server.service.workspace.root
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.03")  # slow enough that /events sees it run
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        # 1. A dataset of real PNG and JPEG files with captions, plus a file that lies about its type.
        files = [
            ("files", ("one.png", image("PNG", (200, 10, 10)), "image/png")),
            ("files", ("one.txt", b"a photo of sks", "text/plain")),
            ("files", ("two.jpg", image("JPEG", (10, 200, 10)), "image/jpeg")),
            ("files", ("two.txt", b"sks on a beach", "text/plain")),
            ("files", ("liar.png", b"GIF? no, plain text", "image/png")),
        ]
        summary = client.post("/datasets/faces/files", files=files).json()
        assert sorted(summary["saved"]) == ["one.png", "one.txt", "two.jpg", "two.txt"]
        assert summary["images"] == 2 and summary["captions"] == 2 and summary["images_without_caption"] == []
        assert [s["filename"] for s in summary["skipped"]] == ["liar.png"]

        # 2. A training with the stand-in trainer.
        body = {
            "type": "train",
            "training_name": "faces",
            "trigger_word": "sks",
            "base_model": "sd15",
            "steps": 20,
            "save_every": 5,
            "sample_every": 10,
            "sample_prompts": ["a photo of [trigger]"],
        }
        started = client.post("/jobs", json=body, headers={"Idempotency-Key": "e2e-1"})
        assert started.status_code == 202
        job = started.json()

        # 3. Follow /events to the end.
        events = follow(client, job["links"]["events"])
        names = [e["event"] for e in events]
        assert names[0] == "status" and names[-1] == "end"
        assert events[-1]["data"] == {"id": job["id"], "status": "completed", "error": None}
        assert "progress" in names and "log" in names
        steps = [e["data"]["step"] for e in events if e["event"] == "progress"]
        assert steps == sorted(steps) and steps[-1] == 20
        checkpoints = {
            e["data"]["step"] for e in events if e["event"] == "artifact" and e["data"]["kind"] == "checkpoint"
        }
        assert checkpoints >= {15}  # older ones may have been pruned before the scan saw them

        # 4. Download the LoRA and compare it with the file on disk; then part of it.
        final = client.get(f"/jobs/{job['id']}").json()
        lora = next(a for a in final["artifacts"] if a["kind"] == "lora")
        on_disk = (workspace / lora["path"]).read_bytes()
        download = client.get(lora["url"])
        assert download.status_code == 200 and download.content == on_disk
        assert download.headers["content-length"] == str(len(on_disk))
        part = client.get(lora["url"], headers={"Range": "bytes=0-7"})
        assert part.status_code == 206 and part.content == on_disk[:8]
        assert part.headers["content-range"] == f"bytes 0-7/{len(on_disk)}"
        assert client.get(f"/files/{lora['path']}").content == on_disk
        assert any(m["path"] == lora["path"] for m in client.get("/models").json()["loras"])

        # A retry with the same Idempotency-Key is the same job.
        assert client.post("/jobs", json=body, headers={"Idempotency-Key": "e2e-1"}).json()["id"] == job["id"]

        # 5. Cancel a slow training while it runs.
        monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.5")
        slow = client.post("/jobs", json={**body, "steps": 500}).json()
        deadline = time.monotonic() + 30
        while client.get(f"/jobs/{slow['id']}").json()["progress"]["step"] < 1:  # training, past start-up
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert client.post(slow["links"]["cancel"]).status_code == 202
        stopped = follow(client, slow["links"]["events"])
        assert stopped[-1]["event"] == "end" and stopped[-1]["data"]["status"] == "cancelled", stopped[-1]
        assert client.post(slow["links"]["cancel"]).status_code == 409

        # 6. Delete both, the first with its files.
        output = workspace / final["output_dir"]
        assert client.delete(f"/jobs/{job['id']}", params={"files": "true"}).status_code == 204
        assert not output.exists()
        assert client.get(lora["url"]).status_code == 404
        assert client.delete(f"/jobs/{slow['id']}").status_code == 204
        assert client.get("/jobs").json()["data"] == []


def test_events_resume_on_a_live_job_without_repeating_log_lines(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.05")
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        client.post("/datasets/faces/files", files=[("files", ("a.png", image("PNG", (1, 2, 3)), "image/png"))])
        body = {"type": "train", "training_name": "faces", "base_model": "sd15", "steps": 40, "save_every": 10}
        job = client.post("/jobs", json=body).json()
        first = follow(client, job["links"]["events"], stop_after=4)  # then the connection drops
        assert first[-1]["event"] != "end"
        rest = follow(client, job["links"]["events"], headers={"Last-Event-ID": first[-1]["id"]})
        assert rest[-1]["event"] == "end" and rest[-1]["data"]["status"] == "completed"
        seqs = [int(e["id"].split("-")[0]) for e in first + rest]
        assert seqs == list(range(1, len(seqs) + 1))  # ids keep increasing across the reconnect
        lines = [line for e in first + rest if e["event"] == "log" for line in e["data"]["lines"]]
        whole = client.get(f"/jobs/{job['id']}/logs").text.splitlines()
        assert lines == whole  # every line once, in order, across both connections


def test_oversized_upload_is_413_over_a_real_socket(tmp_path: Path) -> None:
    from tests.helpers import make_settings

    server = LiveServer(make_settings(tmp_path, max_upload_bytes=10_000)).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            big = image("PNG", (5, 5, 5)) + b"\x00" * 20_000
            response = client.post("/datasets/big/files", files=[("files", ("big.png", big, "image/png"))])
            assert response.status_code == 413
            assert "limit of 10000 bytes" in response.json()["error"]
            dataset = client.get("/datasets/big")
            assert dataset.status_code == 404 or dataset.json()["images"] == 0
    finally:
        server.stop()
