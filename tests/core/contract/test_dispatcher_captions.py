"""The caption types through core.contract.dispatcher.dispatch: caption_dataset, list_captions, set_caption, and
autocaption on train_with_yaml with the stand-in trainer; real captioning on the CPU with a tiny random BLIP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.contract.dispatcher import dispatch
from core.jobs.service import JobService
from tests.fakes.tiny_caption import build_tiny_captioner, make_images

YAML_WITH_TRIGGER = """\
job: extension
config:
  name: yaml_lora
  process:
    - type: sd_trainer
      training_folder: output
      trigger_word: sks
      datasets:
        - folder_path: training_data/faces
          caption_ext: txt
      network: {type: lora, linear: 4, linear_alpha: 4}
      save: {save_every: 4}
      train: {steps: 6, batch_size: 1, lr: 0.0001}
      model: {name_or_path: runwayml/stable-diffusion-v1-5}
"""


@pytest.fixture
def faces(service: JobService, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Four images, the second captioned, and the tiny captioning model under models/."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    build_tiny_captioner(service.workspace.models / "tiny-blip")
    return make_images(service.workspace.training_data / "faces", 4, captioned=(1,))


async def test_caption_dataset_waits_reports_progress_and_returns_the_process(service: JobService, faces: Path) -> None:
    updates: list[dict[str, Any]] = []
    out = await dispatch(
        service,
        {
            "type": "caption_dataset",
            "training_name": "faces",
            "model": "models/tiny-blip",
            "prefix": "[trigger] portrait,",
            "trigger_word": "ohwx",
            "max_length": 6,
        },
        progress=updates.append,
    )
    assert "error" not in out, out
    assert out["type"] == "caption" and out["status"] == "completed" and out["id"].startswith("cap_")
    assert out["captioning"]["written"] == 3 and out["progress"]["total_steps"] == 3
    assert updates and {u["process_id"] for u in updates} == {out["id"]}
    assert all((faces / f"img_{i:02d}.txt").read_text().startswith("ohwx portrait, ") for i in (0, 2, 3))

    listed = await dispatch(service, {"type": "list_captions", "training_name": "faces", "limit": 3})
    assert listed["total"] == 4 and listed["captioned"] == 4 and listed["next_cursor"] == "img_02.png"
    assert listed["images"][1] == {
        "image": "img_01.png",
        "caption": "old caption 1",
        "has_caption": True,
        "size": listed["images"][1]["size"],
    }
    rest = await dispatch(service, {"type": "list_captions", "training_name": "faces", "cursor": listed["next_cursor"]})
    assert [e["image"] for e in rest["images"]] == ["img_03.png"] and rest["next_cursor"] is None

    edited = await dispatch(
        service, {"type": "set_caption", "training_name": "faces", "image": "img_03.png", "caption": "fixed by hand"}
    )
    assert edited["caption"] == "fixed by hand"
    assert (faces / "img_03.txt").read_text() == "fixed by hand\n"


async def test_caption_dataset_without_waiting_returns_the_process_id(service: JobService, faces: Path) -> None:
    out = await dispatch(
        service, {"type": "caption_dataset", "training_name": "faces", "model": "models/tiny-blip", "wait": False}
    )
    assert set(out) == {"process_id", "status", "type"} and out["type"] == "caption"
    done = await service.wait(out["process_id"], timeout=120)
    assert done.status == "completed", done.error
    listed = await dispatch(service, {"type": "processes", "job_type": "caption"})
    assert [p["id"] for p in listed["processes"]] == [out["process_id"]]


async def test_train_with_yaml_autocaptions_first(service: JobService, faces: Path) -> None:
    out = await dispatch(
        service,
        {
            "type": "train_with_yaml",
            "yaml_config": YAML_WITH_TRIGGER,
            "autocaption": {"model": "models/tiny-blip", "suffix": "plain background", "max_length": 5},
        },
    )
    assert "error" not in out, out
    assert out["status"] == "completed" and out["phase"] == "training"
    assert out["captioning"]["written"] == 3 and out["progress"]["step"] == 6
    for index in (0, 2, 3):
        text = (faces / f"img_{index:02d}.txt").read_text()
        assert text.endswith(" plain background\n") and not text.startswith("sks")  # ai-toolkit adds the trigger
    assert (faces / "img_01.txt").read_text() == "old caption 1\n"


async def test_autocaption_true_asks_for_the_default_model_which_must_be_reachable(
    service: JobService, faces: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = await dispatch(service, {"type": "train_with_yaml", "yaml_config": YAML_WITH_TRIGGER, "autocaption": True})
    assert out == {
        "error": "autocaption.model: 'Salesforce/blip-image-captioning-base' is not in the Hugging Face cache "
        "and HF_HUB_OFFLINE is set"
    }
    assert service.list()[0] == []
