"""Helpers for tests that run the stand-in ai-toolkit (tests/fakes/ai_toolkit/run.py) as a real subprocess."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import yaml
from PIL import Image

FAKE_TOOLKIT_DIR = Path(__file__).resolve().parent / "ai_toolkit"


def make_dataset(folder: Path, n: int = 2) -> Path:
    """Write n tiny real PNGs with matching .txt captions into folder; return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(n):
        Image.new("RGB", (16, 16), (40 * index % 256, 90, 160)).save(folder / f"img_{index}.png")
        (folder / f"img_{index}.txt").write_text(f"a photo of sks thing number {index}\n")
    return folder


def write_config(
    path: Path,
    *,
    name: str,
    training_folder: Path,
    dataset: Path,
    steps: int,
    save_every: int,
    max_step_saves_to_keep: int = 4,
    sample_every: int | None = None,
    prompts: Sequence[str] = (),
    sample_format: str = "jpg",
    disable_sampling: bool = False,
    skip_first_sample: bool = True,
    lr: float = 1e-4,
) -> Path:
    """Write an ai-toolkit-shaped LoRA config (YAML, or JSON by a .json suffix) for the stand-in; return path."""
    config = {
        "job": "extension",
        "config": {
            "name": name,
            "process": [
                {
                    "type": "sd_trainer",
                    "training_folder": str(training_folder),
                    "device": "cuda:0",
                    "network": {"type": "lora", "linear": 4, "linear_alpha": 4},
                    "save": {
                        "dtype": "float16",
                        "save_every": save_every,
                        "max_step_saves_to_keep": max_step_saves_to_keep,
                    },
                    "datasets": [{"folder_path": str(dataset), "caption_ext": "txt", "resolution": [512]}],
                    "train": {
                        "batch_size": 1,
                        "steps": steps,
                        "lr": lr,
                        "optimizer": "adamw8bit",
                        "disable_sampling": disable_sampling,
                        "skip_first_sample": skip_first_sample,
                    },
                    "model": {"name_or_path": "runwayml/stable-diffusion-v1-5"},
                    "sample": {
                        "sampler": "ddpm",
                        "sample_every": sample_every or steps,
                        "format": sample_format,
                        "prompts": list(prompts),
                        "width": 512,
                        "height": 512,
                        "seed": 42,
                        "sample_steps": 20,
                    },
                }
            ],
        },
        "meta": {"name": "[name]", "version": "1.0"},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".json":
        path.write_text(json.dumps(config, indent=2))
    else:
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
