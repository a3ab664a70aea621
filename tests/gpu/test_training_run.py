"""TrainingRun and ManagedProcess against the stand-in ai-toolkit, run as real subprocesses (CPU only)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors import safe_open

from gpu.artifacts import Artifact
from gpu.process import describe_signal, gpu_env
from gpu.progress import Progress
from gpu.training import RunOutcome, TrainingRun
from tests.fakes.trainer import FAKE_TOOLKIT_DIR, make_dataset, write_config

SECRET = "hf_secret_value_that_must_not_leak"


class Recorder:
    """Collects what a TrainingRun reports."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.progress: list[Progress] = []
        self.progress_times: list[float] = []
        self.artifacts: list[list[Artifact]] = []

    def on_start(self, pid: int) -> None:
        self.pids.append(pid)

    def on_progress(self, progress: Progress) -> None:
        self.progress.append(progress)
        self.progress_times.append(time.monotonic())

    def on_artifacts(self, artifacts: list[Artifact]) -> None:
        self.artifacts.append(artifacts)


def make_run(
    tmp_path: Path,
    *,
    name: str = "tiny_lora",
    steps: int = 12,
    save_every: int = 5,
    dataset: Path | None = None,
    recorder: Recorder | None = None,
    gpu: str | None = "0",
    extra_env: dict[str, str] | None = None,
    progress_interval: float = 0.0,
    toolkit_dir: Path = FAKE_TOOLKIT_DIR,
    **config: object,
) -> TrainingRun:
    """A TrainingRun of the stand-in on a fresh dataset and config under tmp_path."""
    recorder = recorder or Recorder()
    dataset = dataset if dataset is not None else make_dataset(tmp_path / "dataset")
    config_path = write_config(
        tmp_path / "configs" / f"{name}.yaml",
        name=name,
        training_folder=tmp_path / "output",
        dataset=dataset,
        steps=steps,
        save_every=save_every,
        **config,  # type: ignore[arg-type]
    )
    return TrainingRun(
        python=sys.executable,
        toolkit_dir=toolkit_dir,
        config_path=config_path,
        job_name=name,
        save_root=tmp_path / "output" / name,
        log_path=tmp_path / "logs" / f"{name}.log",
        gpu=gpu,
        extra_env=extra_env,
        on_start=recorder.on_start,
        on_progress=recorder.on_progress,
        on_artifacts=recorder.on_artifacts,
        progress_interval=progress_interval,
        poll_interval=0.02,
    )


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is pgid, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            members.append(int(entry))
    return members


async def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll until condition() holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def assert_group_gone(pgid: int) -> None:
    """No process of the group survives (zombies are left for init to reap)."""
    await wait_for(lambda: not group_members(pgid), timeout=5.0)
    with pytest.raises(ProcessLookupError):
        for _ in range(250):  # a killed orphan can stay a zombie for a moment
            os.killpg(pgid, 0)
            time.sleep(0.02)


async def test_a_run_completes_with_progress_artifacts_and_a_clean_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AITK_JOB_ID", "ui-job-that-must-not-leak")
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.02")
    recorder = Recorder()
    run = make_run(
        tmp_path,
        steps=20,
        save_every=5,
        sample_every=10,
        prompts=["a photo of sks", "sks on a beach"],
        recorder=recorder,
        gpu="3",
        extra_env={"HF_TOKEN": SECRET},
    )
    # An earlier run's text in the same log must not be read as this run's progress.
    run.log_path.parent.mkdir(parents=True)
    stale = "tiny_lora: 100%|##########| 99/99 [00:09<00:00, 10.00it/s, lr: 1.0e-04 loss: 9.000e-01]\n"
    run.log_path.write_text("an earlier run\n" + stale)

    outcome = await run.run()

    assert outcome == RunOutcome("completed", 0, None)
    assert recorder.pids == [run.pid] and run.pid is not None
    steps = [p.step for p in recorder.progress]
    assert len(steps) >= 3, steps
    assert steps == sorted(steps) and all(p.total == 20 for p in recorder.progress)
    assert recorder.progress[-1].step == 20 and run.progress == recorder.progress[-1]
    assert recorder.progress[-1].loss is not None and recorder.progress[-1].lr == pytest.approx(1e-4)

    final = recorder.artifacts[-1]
    assert final == run.artifacts
    assert [(a.kind, a.name, a.step) for a in final] == [
        ("lora", "tiny_lora.safetensors", None),
        ("checkpoint", "tiny_lora_000000005.safetensors", 5),
        ("checkpoint", "tiny_lora_000000010.safetensors", 10),
        ("checkpoint", "tiny_lora_000000015.safetensors", 15),
        ("sample", final[4].name, 10),
        ("sample", final[5].name, 10),
        ("sample", final[6].name, 20),
        ("sample", final[7].name, 20),
        ("config", "config.yaml", None),
    ]
    assert final[4].name.endswith("__000000010_0.jpg") and final[5].name.endswith("__000000010_1.jpg")
    with safe_open(str(final[2].path), "numpy") as weights:
        assert json.loads(weights.metadata()["training_info"]) == {"step": 10, "epoch": 1}

    seen = json.loads((run.save_root / "env.json").read_text())
    assert seen["CUDA_VISIBLE_DEVICES"] == "3"
    assert seen["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert seen["PYTHONUNBUFFERED"] == "1"
    assert seen["AITK_JOB_ID"] is None
    assert seen["HF_TOKEN_SET"] is True
    assert Path(seen["cwd"]) == FAKE_TOOLKIT_DIR
    log = run.log_path.read_text()
    assert log.startswith("an earlier run\n" + stale)
    assert SECRET not in log and "Saved checkpoint to" in log
    await assert_group_gone(run.pid)


async def test_no_gpu_leaves_cuda_visible_devices_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    run = make_run(tmp_path, steps=2, gpu=None)
    assert (await run.run()).status == "completed"
    assert json.loads((run.save_root / "env.json").read_text())["CUDA_VISIBLE_DEVICES"] is None


async def test_progress_callbacks_are_throttled_but_the_last_state_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.02")
    recorder = Recorder()
    run = make_run(tmp_path, steps=40, save_every=100, recorder=recorder, progress_interval=0.25)
    assert (await run.run()).status == "completed"
    gaps = [b - a for a, b in zip(recorder.progress_times, recorder.progress_times[1:], strict=False)]
    assert all(gap >= 0.24 for gap in gaps[:-1]), gaps  # the final delivery may come early
    assert len(recorder.progress) >= 2
    assert recorder.progress[-1].step == 40


async def test_ascii_bar_is_followed_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AITK_ASCII", "1")
    recorder = Recorder()
    run = make_run(tmp_path, steps=6, recorder=recorder)
    assert (await run.run()).status == "completed"
    assert "|##########| 6/6" in run.log_path.read_text()
    assert recorder.progress[-1].step == 6


async def test_an_exception_fails_with_the_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AITK_FAIL_AT_STEP", "7")
    recorder = Recorder()
    run = make_run(tmp_path, steps=12, save_every=5, recorder=recorder)
    outcome = await run.run()
    assert outcome == RunOutcome("failed", 1, "simulated failure at step 7")
    assert recorder.progress[-1].step == 7
    assert [a.name for a in run.artifacts if a.kind == "checkpoint"] == ["tiny_lora_000000005.safetensors"]
    assert "Traceback (most recent call last)" in run.log_path.read_text()


async def test_missing_dataset_fails_with_the_errno_message(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_dataset"
    run = make_run(tmp_path, dataset=missing)
    outcome = await run.run()
    assert outcome == RunOutcome("failed", 1, f"[Errno 2] No such file or directory: '{missing}'")
    # config.yaml is written before the failure, as ai-toolkit does
    assert [a.kind for a in run.artifacts] == ["config"]


async def test_empty_dataset_fails(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    outcome = await make_run(tmp_path, dataset=empty).run()
    assert outcome == RunOutcome("failed", 1, f"no images found in {empty}")


async def test_missing_config_file_fails(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.config_path.unlink()
    outcome = await run.run()
    assert outcome == RunOutcome("failed", 1, f"Could not find config file {run.config_path}")


async def test_stop_while_running_is_cancelled_and_keeps_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.03")
    monkeypatch.setenv("FAKE_AITK_SPAWN_CHILD", "1")
    recorder = Recorder()
    run = make_run(tmp_path, steps=500, save_every=4, recorder=recorder)

    def stop_after_two_saves(progress: Progress) -> None:
        recorder.on_progress(progress)
        if progress.step >= 9:
            run.request_stop(grace=20)

    run._on_progress = stop_after_two_saves
    started = time.monotonic()
    outcome = await run.run()

    assert outcome == RunOutcome("cancelled", 0, None)
    assert time.monotonic() - started < 10  # SIGINT worked; no waiting for the grace period
    assert run.stop_requested
    log = run.log_path.read_text()
    assert "\n========================================\nJob stopped\n" in log
    kinds = [a.kind for a in run.artifacts]
    assert "lora" not in kinds  # no final save on a stop
    assert [a.step for a in run.artifacts if a.kind == "checkpoint"][:2] == [4, 8]
    assert recorder.progress[-1].step < 500
    await assert_group_gone(run.pid)  # the worker-like child was killed after the trainer exited


async def test_a_trainer_ignoring_sigint_is_killed_after_the_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.02")
    monkeypatch.setenv("FAKE_AITK_IGNORE_SIGINT", "1")
    monkeypatch.setenv("FAKE_AITK_SPAWN_CHILD", "1")
    run = make_run(tmp_path, steps=1000, save_every=1000)
    task = asyncio.create_task(run.run())
    await wait_for(lambda: run.pid is not None and len(group_members(run.pid)) >= 2)
    pgid = run.pid
    assert pgid is not None
    children = [pid for pid in group_members(pgid) if pid != pgid]

    started = time.monotonic()
    run.request_stop(grace=0.3)
    outcome = await task

    assert outcome == RunOutcome("cancelled", -signal.SIGKILL, None)
    assert 0.25 <= time.monotonic() - started < 5
    assert children  # the worker-like child existed
    await assert_group_gone(pgid)  # and nothing of the group survives, child included


async def test_sigint_from_someone_else_is_a_cancel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.02")
    recorder = Recorder()
    run = make_run(tmp_path, steps=1000, save_every=1000, recorder=recorder)
    task = asyncio.create_task(run.run())
    await wait_for(lambda: bool(recorder.progress) and recorder.progress[-1].step >= 2)
    assert run.pid is not None
    os.kill(run.pid, signal.SIGINT)  # e.g. Ctrl-C in a terminal: the banner says it stopped
    assert await task == RunOutcome("cancelled", 0, None)
    assert not run.stop_requested


async def test_older_checkout_dying_by_sigint_after_a_stop_is_cancelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.02")
    monkeypatch.setenv("FAKE_AITK_OLD_SIGINT", "1")
    recorder = Recorder()
    run = make_run(tmp_path, steps=1000, save_every=1000, recorder=recorder)
    task = asyncio.create_task(run.run())
    await wait_for(lambda: bool(recorder.progress) and recorder.progress[-1].step >= 2)
    run.request_stop(grace=20)
    assert await task == RunOutcome("cancelled", -signal.SIGINT, None)


async def test_killed_from_outside_is_a_failure_naming_the_signal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.02")
    recorder = Recorder()
    run = make_run(tmp_path, steps=1000, save_every=1000, recorder=recorder)
    task = asyncio.create_task(run.run())
    await wait_for(lambda: bool(recorder.progress) and recorder.progress[-1].step >= 2)
    assert run.pid is not None
    os.kill(run.pid, signal.SIGKILL)  # what the kernel's OOM killer does
    outcome = await task
    assert outcome.status == "failed" and outcome.exit_code == -signal.SIGKILL
    assert outcome.error is not None
    assert "SIGKILL" in outcome.error and "out-of-memory" in outcome.error


async def test_a_silent_non_zero_exit_reports_the_last_lines(tmp_path: Path) -> None:
    toolkit = tmp_path / "odd_toolkit"
    toolkit.mkdir()
    (toolkit / "run.py").write_text(
        "import sys\n"
        "print('Loading model', flush=True)\n"
        "sys.stderr.write('\\rtiny_lora: step 1\\rtiny_lora: step 2'); sys.stderr.flush()\n"
        "print('\\nfatal: CUDA driver too old', flush=True)\n"
        "sys.exit(3)\n"
    )
    outcome = await make_run(tmp_path, toolkit_dir=toolkit).run()
    assert outcome.status == "failed" and outcome.exit_code == 3
    assert outcome.error == (
        "ai-toolkit exited with status 3; last output: Loading model | tiny_lora: step 2 | fatal: CUDA driver too old"
    )


async def test_missing_run_py_fails_clearly_without_raising(tmp_path: Path) -> None:
    empty_toolkit = tmp_path / "not_ai_toolkit"
    empty_toolkit.mkdir()
    recorder = Recorder()
    run = make_run(tmp_path, toolkit_dir=empty_toolkit, recorder=recorder)
    outcome = await run.run()
    assert outcome.status == "failed" and outcome.exit_code is None
    assert outcome.error is not None and "run.py" in outcome.error and str(empty_toolkit) in outcome.error
    assert recorder.pids == [] and run.pid is None


async def test_missing_python_fails_clearly(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    run.python = str(tmp_path / "no" / "python3")
    outcome = await run.run()
    assert outcome.status == "failed" and outcome.error is not None and run.python in outcome.error


async def test_stop_before_start_spawns_nothing(tmp_path: Path) -> None:
    recorder = Recorder()
    run = make_run(tmp_path, recorder=recorder)
    run.request_stop(grace=1)
    assert await run.run() == RunOutcome("cancelled", None, None)
    assert recorder.pids == [] and not run.save_root.exists()
    run.request_stop(grace=1)  # and again after the end: harmless


async def test_stop_from_another_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.02")
    recorder = Recorder()
    run = make_run(tmp_path, steps=1000, save_every=1000, recorder=recorder)
    task = asyncio.create_task(run.run())
    await wait_for(lambda: bool(recorder.progress))
    await asyncio.to_thread(run.request_stop, 20)
    assert await task == RunOutcome("cancelled", 0, None)


async def test_stop_works_when_the_server_ignores_sigint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A server started in the background of a shell script inherits SIGINT ignored; the trainer must not.
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.02")
    recorder = Recorder()
    run = make_run(tmp_path, steps=1000, save_every=1000, recorder=recorder)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        task = asyncio.create_task(run.run())
        await wait_for(lambda: bool(recorder.progress))
    finally:
        signal.signal(signal.SIGINT, previous)
    run.request_stop(grace=20)
    assert await task == RunOutcome("cancelled", 0, None)


async def test_cancelling_run_leaves_the_trainer_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A server shutting down cancels its tasks; the trainer lives on in its own session to be adopted later.
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.02")
    recorder = Recorder()
    run = make_run(tmp_path, steps=1000, save_every=1000, recorder=recorder)
    task = asyncio.create_task(run.run())
    await wait_for(lambda: bool(recorder.progress))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert run.pid is not None
    try:
        await asyncio.sleep(0.2)
        assert run.pid in group_members(run.pid)
        assert os.getpgid(run.pid) == run.pid != os.getpgid(0)
    finally:
        os.killpg(run.pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [
        (-9, "killed by signal SIGKILL (usually the kernel's out-of-memory killer)"),
        (-15, "killed by signal SIGTERM (asked to terminate)"),
        (-2, "killed by signal SIGINT"),
        (1, "exited with status 1"),
        (-200, "killed by signal 200"),
    ],
)
def test_describe_signal(returncode: int, expected: str) -> None:
    assert describe_signal(returncode) == expected


def test_gpu_env() -> None:
    base = {"PATH": "/bin", "AITK_JOB_ID": "x", "CUDA_VISIBLE_DEVICES": "0,1", "PYTHONUNBUFFERED": "0"}
    base |= {"BUCKET_ACCESS_KEY_ID": "key", "BUCKET_SECRET_ACCESS_KEY": SECRET}
    env = gpu_env(base, "1", {"HF_TOKEN": SECRET})
    assert env == {
        "PATH": "/bin",
        "CUDA_VISIBLE_DEVICES": "1",
        "PYTHONUNBUFFERED": "1",
        "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        "HF_TOKEN": SECRET,
    }
    assert gpu_env(base, None, None)["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert base["AITK_JOB_ID"] == "x"  # the caller's mapping is not changed


async def test_stop_while_the_trainer_is_still_starting_is_cancelled(tmp_path: Path) -> None:
    """A SIGINT that lands before run.py's own handler (imports take ~15 s for real) ends as cancelled."""
    toolkit = tmp_path / "toolkit"
    toolkit.mkdir()
    # a run.py that is still "importing" (sleeping) when the stop comes: KeyboardInterrupt, traceback, exit 1
    (toolkit / "run.py").write_text(
        "import sys, time\ntry:\n    time.sleep(30)\nexcept KeyboardInterrupt:\n"
        "    import traceback; traceback.print_exc(); sys.exit(1)\n"
    )
    run = TrainingRun(
        python=sys.executable,
        toolkit_dir=toolkit,
        config_path=tmp_path / "c.yaml",
        job_name="j",
        save_root=tmp_path / "out" / "j",
        log_path=tmp_path / "j.log",
        gpu=None,
        poll_interval=0.05,
    )
    task = asyncio.create_task(run.run())
    while run.pid is None:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    run.request_stop(5.0)
    outcome = await task
    assert outcome.status == "cancelled" and outcome.exit_code == 1
