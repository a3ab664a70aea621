"""The stand-in trainer honours ai-toolkit's job-control table and resume exactly as the reference records them.

Each test drives tests/fakes/ai_toolkit/run.py as a real subprocess against a real SQLite file, and checks one
recorded behaviour of the real trainer (docs/reference/ai-toolkit-jobcontrol.md), so lorapod's own tests rest on
a stand-in that fails where the real trainer fails.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.jobs.control import JobControl
from tests.fakes.trainer import FAKE_TOOLKIT_DIR, make_dataset, write_config

JOB_ID = "ctl-job-1"


def config(tmp_path: Path, *, steps: int = 400, save_every: int = 1000, neg: str | None = "", **kw: Any) -> Path:
    path = write_config(
        tmp_path / "config.yaml",
        name="ctl",
        training_folder=tmp_path / "out",
        dataset=make_dataset(tmp_path / "data"),
        steps=steps,
        save_every=save_every,
        prompts=["a photo"],
        sample_every=10_000,
        **kw,
    )
    data = yaml.safe_load(path.read_text())
    process = data["config"]["process"][0]
    process["type"] = "diffusion_trainer"
    process["sqlite_db_path"] = str(tmp_path / "ctl.db")
    if neg is not None:
        process["sample"]["neg"] = neg
    path.write_text(yaml.safe_dump(data))
    return path


def start(cfg: Path, tmp_path: Path, step_seconds: float = 0.02) -> subprocess.Popen[str]:
    env = {**os.environ, "AITK_JOB_ID": JOB_ID, "FAKE_AITK_STEP_SECONDS": str(step_seconds), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "run.py", str(cfg)],
        cwd=FAKE_TOOLKIT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def row(tmp_path: Path) -> dict[str, Any]:
    with sqlite3.connect(tmp_path / "ctl.db") as db:
        db.row_factory = sqlite3.Row
        return dict(db.execute("SELECT * FROM Job WHERE id = ?", (JOB_ID,)).fetchone())


def set_flags(tmp_path: Path, **flags: int) -> None:
    with sqlite3.connect(tmp_path / "ctl.db") as db:
        db.execute(f"UPDATE Job SET {', '.join(f'{k} = ?' for k in flags)} WHERE id = ?", [*flags.values(), JOB_ID])


def wait_until(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition never came true"
        time.sleep(0.02)


def training(tmp_path: Path, min_step: int = 3) -> bool:
    state = row(tmp_path)
    return state["status"] == "running" and state["info"] == "Training" and state["step"] >= min_step


def checkpoints(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "out" / "ctl").glob("ctl_*.safetensors"))


@pytest.fixture
def table(tmp_path: Path) -> JobControl:
    control = JobControl(tmp_path / "ctl.db", JOB_ID)
    control.reset()
    return control


def test_save_now_saves_and_trains_on_then_stop_exits_1(tmp_path: Path, table: JobControl) -> None:
    proc = start(config(tmp_path), tmp_path)
    wait_until(lambda: training(tmp_path))
    table.request("save_now")
    wait_until(lambda: bool(checkpoints(tmp_path)) and row(tmp_path)["save_now"] == 0)
    assert proc.poll() is None  # it trains on
    saved = int(checkpoints(tmp_path)[0].split("_")[1].split(".")[0])
    table.request("stop")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "Error running job: Job stopped" in out
    state = row(tmp_path)
    assert (state["status"], state["info"], state["step"]) == ("stopped", "Job stopped", saved)
    assert not (tmp_path / "out" / "ctl" / "ctl.safetensors").exists()


def test_save_now_and_stop_together_lose_the_save(tmp_path: Path, table: JobControl) -> None:
    proc = start(config(tmp_path), tmp_path)
    wait_until(lambda: training(tmp_path))
    set_flags(tmp_path, save_now=1, stop=1)
    proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert checkpoints(tmp_path) == []
    assert row(tmp_path)["save_now"] == 1


def test_sigint_exits_0_and_marks_the_row_stopped(tmp_path: Path, table: JobControl) -> None:
    proc = start(config(tmp_path), tmp_path)
    wait_until(lambda: training(tmp_path))
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Job stopped" in out
    assert row(tmp_path)["status"] == "stopped"


def test_stale_stop_flag_stops_the_next_run_before_training(tmp_path: Path, table: JobControl) -> None:
    set_flags(tmp_path, stop=1)
    proc = start(config(tmp_path), tmp_path)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert row(tmp_path)["info"] == "Job stopped"
    assert "ctl:" not in out  # no training bar was ever drawn


def test_sample_now_needs_neg(tmp_path: Path, table: JobControl) -> None:
    proc = start(config(tmp_path, neg=None), tmp_path)
    wait_until(lambda: training(tmp_path))
    table.request("sample_now")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "text input must be of type" in out
    assert row(tmp_path)["status"] == "error"


def test_sample_now_with_neg_renders_and_trains_on(tmp_path: Path, table: JobControl) -> None:
    proc = start(config(tmp_path), tmp_path)
    wait_until(lambda: training(tmp_path))
    table.request("sample_now")
    wait_until(lambda: any((tmp_path / "out" / "ctl" / "samples").glob("*.jpg")) and row(tmp_path)["sample_now"] == 0)
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)


def test_a_file_without_the_table_exits_1(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "ctl.db").close()
    proc = start(config(tmp_path), tmp_path)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "no such table: Job" in out


def test_resume_takes_the_newest_and_crashes_on_a_truncated_one(tmp_path: Path) -> None:
    cfg = config(tmp_path, steps=12, save_every=4)
    env = {**os.environ, "FAKE_AITK_STEP_SECONDS": "0.001", "FAKE_AITK_FAIL_AT_STEP": "10"}
    first = subprocess.run([sys.executable, "run.py", str(cfg)], cwd=FAKE_TOOLKIT_DIR, env=env, capture_output=True)
    assert first.returncode == 1
    assert checkpoints(tmp_path) == ["ctl_000000004.safetensors", "ctl_000000008.safetensors"]
    folder = tmp_path / "out" / "ctl"
    newest = folder / "ctl_000000008.safetensors"
    newest.write_bytes(newest.read_bytes()[:-16])  # killed while writing the tensor data
    env.pop("FAKE_AITK_FAIL_AT_STEP")
    rerun = subprocess.run(
        [sys.executable, "run.py", str(cfg)], cwd=FAKE_TOOLKIT_DIR, env=env, capture_output=True, text=True
    )
    assert rerun.returncode == 1
    assert "RESUMING FROM" in rerun.stdout and "incomplete metadata, file not fully covered" in rerun.stdout
    newest.rename(folder / "ctl_000000008.safetensors.corrupt")  # renamed in place: still picked, still fatal
    renamed = subprocess.run(
        [sys.executable, "run.py", str(cfg)], cwd=FAKE_TOOLKIT_DIR, env=env, capture_output=True, text=True
    )
    assert renamed.returncode == 1
    (folder / "ctl_000000008.safetensors.corrupt").rename(tmp_path / "moved_out.safetensors")
    moved = subprocess.run(
        [sys.executable, "run.py", str(cfg)], cwd=FAKE_TOOLKIT_DIR, env=env, capture_output=True, text=True
    )
    assert moved.returncode == 0, moved.stdout
    assert "Found step 4 in metadata, starting from there" in moved.stdout
    assert "| 4/12 [" in moved.stderr and "| 0/12 [" not in moved.stderr  # the bar starts at the resumed step
    assert (folder / "ctl.safetensors").is_file()
