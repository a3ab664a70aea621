"""The `lorapod` CLI through typer's runner against a real server (uvicorn on loopback, the stand-in trainer)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from lorapod_cli.errors import ExitCode
from lorapod_cli.main import app
from tests.fakes.trainer import make_dataset
from tests.helpers import LiveServer, make_settings

runner = CliRunner()


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run one command in-process."""
    return runner.invoke(app, list(args), env=env, catch_exceptions=False)


def as_json(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(autouse=True)
def _no_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Never read a developer's own ~/.config/lorapod/config.toml.
    monkeypatch.setenv("LORAPOD_CONFIG", str(tmp_path / "no-config.toml"))
    for name in ("LORAPOD_URL", "LORAPOD_ENDPOINT", "RUNPOD_API_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def pics(tmp_path: Path) -> Path:
    """A folder with two images and their captions, to upload."""
    return make_dataset(tmp_path / "pics", 2)


@pytest.fixture
def trained(live_server: LiveServer, pics: Path) -> dict[str, Any]:
    """A dataset uploaded and a training finished, both through the CLI."""
    url = live_server.url
    assert as_json(cli("upload", str(pics), "--name", "faces", "--url", url, "--json"))["images"] == 2
    options = ["--steps", "12", "--save-every", "5", "--sample-every", "5", "--sample-prompt", "a photo of [trigger]"]
    watched = cli("train", "-d", "faces", "-t", "sks", *options, "--watch", "--url", url)
    assert watched.exit_code == 0, watched.output
    assert "completed" in watched.output
    return as_json(cli("jobs", "--url", url, "--json", "--status", "completed"))[0]


def test_health_and_bad_targets(live_server: LiveServer) -> None:
    assert as_json(cli("health", "--url", live_server.url, "--json"))["status"] == "ok"
    unreachable = cli("health", "--url", "http://127.0.0.1:9")
    assert unreachable.exit_code == ExitCode.unreachable and "cannot reach http://127.0.0.1:9" in unreachable.stderr
    both = cli("jobs", "--url", live_server.url, "--endpoint", "abc")
    assert both.exit_code == ExitCode.usage and "--url and --endpoint" in both.stderr
    assert cli("jobs", "--url", "ftp://x").exit_code == ExitCode.usage


def test_upload_refuses_what_is_not_a_dataset(live_server: LiveServer, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    empty = cli("upload", str(tmp_path / "empty"), "--name", "x", "--url", live_server.url)
    assert empty.exit_code == ExitCode.usage and "DIR:" in empty.stderr and "no images" in empty.stderr
    missing = cli("upload", str(tmp_path / "nope"), "--name", "x", "--url", live_server.url)
    assert missing.exit_code == ExitCode.usage and "does not exist" in missing.stderr
    pics = make_dataset(tmp_path / "p", 1)
    bad_name = cli("upload", str(pics), "--name", "bad name!", "--url", live_server.url)
    assert bad_name.exit_code == ExitCode.usage and "name" in bad_name.stderr, bad_name.stderr


def test_train_watch_jobs_show_logs(trained: dict[str, Any], live_server: LiveServer) -> None:
    url, job_id = live_server.url, trained["id"]
    assert trained["progress"]["step"] == 12
    shown = as_json(cli("show", job_id, "--url", url, "--json"))
    assert shown["status"] == "completed"
    assert shown["metrics"]["points"][-1]["step"] == 12 and shown["metrics"]["phase"] == "completed"
    table = cli("show", job_id, "--url", url)
    assert table.exit_code == 0 and "faces.safetensors" in table.output
    listing = cli("jobs", "--url", url)
    assert job_id in listing.output and "12/12" in listing.output
    tail = cli("logs", job_id, "--tail", "3", "--url", url)
    assert tail.exit_code == 0 and len(tail.stdout.splitlines()) == 3
    followed = cli("logs", job_id, "-f", "--url", url, "--json")  # a finished job: the feed replays and ends
    events = [json.loads(line) for line in followed.stdout.splitlines()]
    assert followed.exit_code == 0 and events[-1]["event"] == "end" and events[-1]["data"]["status"] == "completed"
    assert any(e["event"] == "metrics" and e["data"]["points"] for e in events)
    assert cli("show", "train_000000000000", "--url", url).exit_code == ExitCode.not_found


def test_a_failed_training_exits_1(live_server: LiveServer, pics: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = live_server.url
    cli("upload", str(pics), "--name", "faces", "--url", url)
    monkeypatch.setenv("FAKE_AITK_FAIL_AT_STEP", "3")
    failed = cli("train", "-d", "faces", "-t", "sks", "--steps", "10", "--watch", "--url", url)
    assert failed.exit_code == ExitCode.job_failed, failed.output
    assert "simulated failure at step 3" in failed.output
    job_id = as_json(cli("jobs", "--url", url, "--json"))[0]["id"]
    assert cli("show", job_id, "--url", url).exit_code == ExitCode.job_failed
    refused = cli("train", "-d", "faces", "--steps", "0", "--url", url)
    assert refused.exit_code == ExitCode.usage and "steps" in refused.stderr
    assert cli("train", "--url", url).exit_code == ExitCode.usage  # neither --dataset nor --yaml


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_download_resumes_and_verifies(trained: dict[str, Any], live_server: LiveServer, tmp_path: Path) -> None:
    url, job_id = live_server.url, trained["id"]
    served = live_server.service.workspace.root / next(a["path"] for a in trained["artifacts"] if a["kind"] == "lora")
    out = tmp_path / "out"
    saved = as_json(cli("download", job_id, "-o", str(out), "--url", url, "--json"))
    assert [s["name"] for s in saved] == ["faces.safetensors"]
    assert sha256(out / "faces.safetensors") == sha256(served) == saved[0]["sha256"]
    assert saved[0]["resumed_from"] == 0

    # An interrupted download left the first half: the rerun asks only for the rest.
    again = tmp_path / "again"
    again.mkdir()
    data = served.read_bytes()
    (again / "faces.safetensors.part").write_bytes(data[: len(data) // 2])
    resumed = as_json(cli("download", job_id, "-o", str(again), "--url", url, "--json"))
    assert resumed[0]["resumed_from"] == len(data) // 2
    assert (again / "faces.safetensors").read_bytes() == data and not (again / "faces.safetensors.part").exists()

    # A part whose bytes differ from the server's: resuming keeps them, so the checksum must catch it.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "faces.safetensors.part").write_bytes(b"X" * (len(data) // 2))
    mismatch = cli("download", job_id, "-o", str(bad), "--url", url)
    assert mismatch.exit_code == ExitCode.checksum and "sha256 mismatch" in mismatch.stderr
    assert not (bad / "faces.safetensors").exists() and not (bad / "faces.safetensors.part").exists()

    everything = as_json(cli("download", job_id, "--all", "-o", str(tmp_path / "all"), "--url", url, "--json"))
    kinds = {s["kind"] for s in everything}
    assert {"lora", "checkpoint", "sample", "config"} <= kinds
    for item in everything:
        assert sha256(Path(item["path"])) == item["sha256"]
    missing = cli("download", job_id, "--name", "nope.bin", "--url", url)
    assert missing.exit_code == ExitCode.not_found and "--name" in missing.stderr


def test_cancel(live_server: LiveServer, pics: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = live_server.url
    cli("upload", str(pics), "--name", "faces", "--url", url)
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.5")
    job = as_json(cli("train", "-d", "faces", "-t", "sks", "--steps", "200", "--url", url, "--json"))
    with httpx.Client() as http:
        operation = http.get(f"{url}/openapi.json").json()["paths"]["/jobs/{job_id}/cancel"]["post"]
    advertised = any(p["name"] == "save" for p in operation.get("parameters", []))
    with_save = cli("cancel", job["id"], "--save", "--url", url, "--json")
    if advertised:  # a server with save-on-cancel (issue 14) takes it
        assert with_save.exit_code == 0, with_save.output
    else:
        assert with_save.exit_code == ExitCode.usage and "cannot save on cancel" in with_save.stderr
        cancelled = as_json(cli("cancel", job["id"], "--url", url, "--json"))
        assert cancelled["status"] in ("queued", "running", "cancelled") and cancelled["id"] == job["id"]
    final = cli("logs", job["id"], "-f", "--url", url)
    assert final.exit_code == ExitCode.job_failed and "cancelled" in final.output


@pytest.fixture
def keyed_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveServer]:
    """A server that needs an API key."""
    server = LiveServer(make_settings(tmp_path, api_key="s3cret-key-123")).start()
    try:
        yield server
    finally:
        server.stop()


def test_the_key_comes_from_the_environment_or_a_private_config_file(
    keyed_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = keyed_server.url
    refused = cli("jobs", "--url", url)
    assert refused.exit_code == ExitCode.usage and "401" in refused.stderr and "LORAPOD_API_KEY" in refused.stderr
    allowed = cli("jobs", "--url", url, env={"LORAPOD_API_KEY": "s3cret-key-123"})
    assert allowed.exit_code == 0 and "s3cret" not in allowed.output
    config = tmp_path / "config.toml"
    config.write_text(f'[default]\nurl = "{url}"\napi_key = "s3cret-key-123"\n')
    monkeypatch.setenv("LORAPOD_CONFIG", str(config))
    config.chmod(0o644)
    loose = cli("jobs")
    assert loose.exit_code == ExitCode.usage and "chmod 600" in loose.stderr and "s3cret" not in loose.output
    config.chmod(0o600)
    assert as_json(cli("jobs", "--json")) == []
    config.write_text('[default]\nurl = "http://x"\napi_kye = "typo"\n')
    typo = cli("jobs")
    assert typo.exit_code == ExitCode.usage and "api_kye" in typo.stderr
    # There is no flag that takes a key.
    assert cli("jobs", "--api-key", "x", "--url", url).exit_code == ExitCode.usage


def test_serve_and_migrate_are_lorapod_commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAPOD_WORKSPACE", str(tmp_path / "ws"))
    from core.settings import get_settings

    get_settings.cache_clear()  # settings are read once per process; this test has its own workspace
    try:
        assert cli("migrate").exit_code == 0
    finally:
        get_settings.cache_clear()
    assert (tmp_path / "ws" / "lorapod.db").is_file()
    assert "serve" in cli("--help").output and "migrate" in cli("--help").output
    assert "--port" in cli("serve", "--help").output
