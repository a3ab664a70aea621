"""caption_dataset on RunPod Serverless: `python -m app.handler --test_input` captions for real (tiny BLIP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fakes.tiny_caption import build_tiny_captioner, make_images
from tests.helpers import FAKE_TOOLKIT_DIR

REPO = Path(__file__).resolve().parents[2]


def test_the_serverless_handler_runs_a_caption_job(tmp_path: Path) -> None:
    workspace = tmp_path / "workspace"
    build_tiny_captioner(workspace / "models" / "tiny-blip")
    folder = make_images(workspace / "training_data" / "faces", 2, captioned=(0,))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNPOD_", "LORAPOD_")) and k != "HF_TOKEN"}
    env.update(
        {
            "LORAPOD_WORKSPACE": str(workspace),
            "AI_TOOLKIT_DIR": str(FAKE_TOOLKIT_DIR),
            "AI_TOOLKIT_PYTHON": sys.executable,
            "OMP_NUM_THREADS": "1",
        }
    )
    payload = {"input": {"type": "caption_dataset", "training_name": "faces", "model": "models/tiny-blip"}}
    done = subprocess.run(
        [sys.executable, "-m", "app.handler", "--test_input", json.dumps(payload)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "'status': 'completed'" in output and "'written': 1" in output
    assert (folder / "img_00.txt").read_text() == "old caption 0\n"
    assert (folder / "img_01.txt").is_file()
