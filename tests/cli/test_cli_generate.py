"""`lorapod generate` against a real server with a tiny, randomly initialised SD 1.5 model on the CPU."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from tests.cli.test_cli import as_json, cli
from tests.helpers import LiveServer


@pytest.mark.slow
def test_generate_saves_the_images(live_server: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("diffusers")
    from tests.fakes.tiny_sd import build_tiny_sd15

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two cores: one torch thread is the fastest here
    monkeypatch.setenv("LORAPOD_CONFIG", str(tmp_path / "no-config.toml"))
    build_tiny_sd15(live_server.service.workspace.models / "tiny-sd15")
    model = ["--base-model", "models/tiny-sd15", "--model-family", "sd15", "--steps", "2"]
    size = ["--width", "64", "--height", "64", "--num-images", "2", "--seed", "7"]
    out = tmp_path / "imgs"
    result = as_json(
        cli("generate", "-p", "a red square", *model, *size, "-o", str(out), "--url", live_server.url, "--json")
    )
    assert result["status"] == "completed" and len(result["images"]) == 2
    for image in result["images"]:
        path = Path(image["path"])
        assert path.parent == out and hashlib.sha256(path.read_bytes()).hexdigest() == image["sha256"]
        with Image.open(path) as picture:
            assert picture.size == (64, 64)
    bad = cli("generate", "-p", "x", "--width", "100", "--url", live_server.url)
    assert bad.exit_code == 2 and "width" in bad.stderr
