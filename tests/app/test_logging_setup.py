"""Logging set up once for both adapters: text or JSON lines, level, job ids, masked secrets."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.logging_setup import MASK, configure_logging
from core.log_context import job_context
from core.settings import Settings
from tests.helpers import REPO_ROOT, make_settings

KEY = "key-value-never-in-logs"
HF = "hf_value_never_in_logs"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def test_json_lines_carry_job_ids_tracebacks_and_no_secrets(tmp_path: Path, restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(make_settings(tmp_path, log_format="json", api_key=KEY, hf_token=HF), stream=stream)
    log = logging.getLogger("lorapod.test")

    async def in_a_job_task() -> None:
        job_context.set("train_0123456789ab")  # as the service's job runner task does
        log.info("step %d of %d", 1, 2)

    asyncio.run(in_a_job_task())
    log.info("not about a job")
    log.warning("explicit job", extra={"job_id": "gen_aaaaaaaaaaaa"})
    log.error("the token was %s and the key %s", HF, KEY)
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        log.exception("it failed")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a library complains", UserWarning, stacklevel=1)

    lines = stream.getvalue().splitlines()
    records = [json.loads(line) for line in lines]  # one object per line, even with a multi-line traceback
    assert len(records) == 6
    assert records[0]["job_id"] == "train_0123456789ab" and records[0]["message"] == "step 1 of 2"
    assert "job_id" not in records[1]
    assert records[2]["job_id"] == "gen_aaaaaaaaaaaa" and records[2]["level"] == "WARNING"
    assert records[3]["message"] == f"the token was {MASK} and the key {MASK}"
    assert "Traceback" in records[4]["exception"] and "second line" in records[4]["exception"]
    assert records[5]["logger"] == "py.warnings" and "a library complains" in records[5]["message"]
    assert KEY not in stream.getvalue() and HF not in stream.getvalue()


def test_text_lines_and_level(tmp_path: Path, restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(make_settings(tmp_path, log_level="warning"), stream=stream)
    configure_logging(make_settings(tmp_path, log_level="warning"), stream=stream)  # again: still one handler
    log = logging.getLogger("lorapod.test")
    log.info("too quiet to show")
    log.warning("job %s looks odd", "train_0123456789ab", extra={"job_id": "train_0123456789ab"})
    log.warning("about a job", extra={"job_id": "train_ffffffffffff"})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith("WARNING lorapod.test: job train_0123456789ab looks odd")  # the id is not repeated
    assert lines[1].endswith("WARNING lorapod.test: about a job [job train_ffffffffffff]")


def test_log_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORAPOD_LOG_FORMAT", "JSON")
    monkeypatch.setenv("LORAPOD_LOG_LEVEL", "Debug")
    settings = Settings()
    assert (settings.log_format, settings.log_level) == ("json", "debug")
    monkeypatch.setenv("LORAPOD_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert caught.value.errors()[0]["loc"] == ("log_format",)


def test_serverless_handler_logs_json_without_secrets(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LORAPOD_", "AI_TOOLKIT"))}
    env.update(LORAPOD_WORKSPACE=str(tmp_path / "ws"), LORAPOD_GPUS="0", LORAPOD_LOG_FORMAT="json", HF_TOKEN=HF)
    done = subprocess.run(
        [sys.executable, "-m", "app.handler", "--test_input", '{"input": {"type": "health"}}'],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    # stderr is lorapod's (the RunPod SDK prints its own lines to stdout)
    records = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert any(r["logger"] == "lorapod.handler" and r["message"].startswith("workspace ") for r in records)
    assert any(r["level"] == "WARNING" and "ai-toolkit not found" in r["message"] for r in records)
    assert HF not in done.stderr and HF not in done.stdout
