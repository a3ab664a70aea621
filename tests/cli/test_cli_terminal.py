"""`lorapod train --watch` in a real terminal: tmux runs the CLI, capture-pane reads what a person would see."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fakes.trainer import make_dataset
from tests.helpers import REPO_ROOT, LiveServer
from tests.tools import require_tool


@pytest.fixture(autouse=True)
def _tmux() -> None:
    require_tool("tmux", "a real terminal for --watch")


class Terminal:
    """One tmux server of our own (its own socket) with one 120x30 window running a command."""

    def __init__(self, command: str, env: dict[str, str]) -> None:
        self.socket = f"lorapod-test-{uuid.uuid4().hex[:8]}"
        exports = " ".join(f"{k}={v}" for k, v in env.items())
        shell = f"env {exports} {command}; echo EXIT=$?; sleep 600"
        self.tmux("new-session", "-d", "-x", "120", "-y", "30", "-s", "cli", shell)

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args], check=True, capture_output=True, text=True
        ).stdout

    def screen(self) -> str:
        """What the window shows now."""
        return self.tmux("capture-pane", "-p", "-t", "cli")

    def wait_for(self, found: Callable[[str], bool], what: str, timeout: float = 90) -> str:
        """Read the screen until found(screen) holds."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if found(screen):
                return screen
            assert time.monotonic() < deadline, f"never saw {what}; the screen:\n{screen}"
            time.sleep(0.1)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], check=False, capture_output=True)


@pytest.fixture
def terminal(live_server: LiveServer, tmp_path: Path) -> Iterator[Callable[[str], Terminal]]:
    """Start the CLI in a terminal against the live server, with a dataset uploaded."""
    make_dataset(live_server.service.workspace.training_data / "faces", 2)
    opened: list[Terminal] = []
    env = {
        "PYTHONPATH": str(REPO_ROOT),
        "LORAPOD_CONFIG": str(tmp_path / "no-config.toml"),
        "TERM": "xterm-256color",
        "COLUMNS": "120",
    }

    def start(args: str) -> Terminal:
        term = Terminal(f"{sys.executable} -m lorapod_cli {args} --url {live_server.url}", env)
        opened.append(term)
        return term

    yield start
    for term in opened:
        term.close()


def bar_step(screen: str) -> int:
    """The step the bar shows (0 before it has one)."""
    match = re.search(r"(\d+)/(\d+)", screen)
    return int(match[1]) if match else 0


def test_watch_draws_a_live_bar_to_the_end(
    terminal: Callable[[str], Terminal], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.1")
    term = terminal("train -d faces -t sks --steps 40 --watch")
    live = term.wait_for(lambda s: "training" in s and 0 < bar_step(s) < 40, "the bar mid-training")
    assert "/40" in live and "it/s" in live and "ETA 0:00:" in live
    assert re.search(r"loss \d+\.\d+", live), live
    done = term.wait_for(lambda s: "EXIT=" in s, "the command's end")
    assert "40/40" in done and "completed" in done and "EXIT=0" in done


def test_ctrl_c_stops_watching_not_the_training(
    terminal: Callable[[str], Terminal], live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_AITK_STEP_SECONDS", "0.2")
    term = terminal("train -d faces -t sks --steps 400 --watch")
    term.wait_for(lambda s: "training" in s and bar_step(s) > 0, "the bar moving")
    term.tmux("send-keys", "-t", "cli", "C-c")
    screen = term.wait_for(lambda s: "EXIT=" in s, "the command's end")
    assert "EXIT=130" in screen and "stopped watching" in screen
    job_id = re.search(r"train_[0-9a-f]{12}", screen)
    assert job_id is not None, screen
    with httpx.Client(base_url=live_server.url) as http:
        job = http.get(f"/jobs/{job_id[0]}").json()
        assert job["status"] == "running"
        step = job["progress"]["step"]
        term2 = Terminal(
            f"{sys.executable} -m lorapod_cli logs {job_id[0]} -f --url {live_server.url}",
            {"PYTHONPATH": str(REPO_ROOT), "TERM": "xterm-256color"},
        )
        try:
            term2.wait_for(lambda s: bar_step(s) > step, "the training still moving, followed again")
        finally:
            term2.close()
        assert http.post(f"/jobs/{job_id[0]}/cancel").status_code == 202
