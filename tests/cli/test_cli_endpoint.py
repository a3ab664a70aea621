"""The CLI with --endpoint: the contract through the stock runpod client, against a pod's /v2 mirror."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from lorapod_cli.errors import ExitCode
from tests.cli.test_cli import as_json, cli
from tests.fakes.trainer import make_dataset
from tests.helpers import LiveServer


@pytest.fixture(autouse=True)
def _endpoint(live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import runpod

    # runpod reads RUNPOD_ENDPOINT_BASE_URL once at import; tests point the imported module at the pod instead.
    monkeypatch.setattr(runpod, "endpoint_url_base", f"{live_server.url}/v2")
    monkeypatch.setattr("lorapod_cli.endpoint.POLL_SECONDS", 0.2)
    monkeypatch.setenv("LORAPOD_CONFIG", str(tmp_path / "no-config.toml"))
    monkeypatch.setenv("RUNPOD_API_KEY", "rp-key")
    monkeypatch.delenv("LORAPOD_URL", raising=False)


def test_the_whole_flow_through_an_endpoint(live_server: LiveServer, tmp_path: Path) -> None:
    ep = ["--endpoint", "lorapod"]
    assert as_json(cli("health", *ep, "--json"))["status"] == "ok"
    uploaded = as_json(cli("upload", str(make_dataset(tmp_path / "pics", 2)), "--name", "faces", *ep, "--json"))
    assert uploaded["images"] == 2 and len(uploaded["saved"]) == 4
    watched = cli("train", "-d", "faces", "-t", "sks", "--steps", "12", "--watch", *ep)
    assert watched.exit_code == 0, watched.output
    assert "completed" in watched.output
    job = as_json(cli("jobs", *ep, "--json"))[0]
    assert job["status"] == "completed" and job["progress"]["step"] == 12
    shown = as_json(cli("show", job["id"], *ep, "--json"))
    assert shown["metrics"]["points"][-1]["step"] == 12
    tail = cli("logs", job["id"], "--tail", "2", *ep)
    assert tail.exit_code == 0 and len(tail.stdout.splitlines()) == 2
    followed = cli("logs", job["id"], "-f", *ep, "--json")
    events = [json.loads(line) for line in followed.stdout.splitlines()]
    assert events[-1] == {"event": "end", "data": {"id": job["id"], "status": "completed", "error": None}}
    saved = as_json(cli("download", job["id"], "-o", str(tmp_path / "out"), *ep, "--json"))
    served = live_server.service.workspace.root / next(a["path"] for a in job["artifacts"] if a["kind"] == "lora")
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    assert (
        saved[0]["sha256"]
        == digest
        == hashlib.sha256((tmp_path / "out" / "faces.safetensors").read_bytes()).hexdigest()
    )


def test_endpoint_errors_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = cli("show", "train_000000000000", "--endpoint", "lorapod")
    assert missing.exit_code == ExitCode.not_found and "train_000000000000" in missing.stderr
    refused = cli("train", "-d", "faces", "--steps", "0", "--endpoint", "lorapod")
    assert refused.exit_code == ExitCode.usage and "steps" in refused.stderr
    monkeypatch.delenv("RUNPOD_API_KEY")
    keyless = cli("jobs", "--endpoint", "lorapod")
    assert keyless.exit_code == ExitCode.usage and "RUNPOD_API_KEY" in keyless.stderr
