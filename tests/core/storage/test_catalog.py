"""The model catalog: LoRAs under output/ with steps and job ids, base models on disk and in hub caches."""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from core.errors import InvalidInput
from core.storage.catalog import find_lora, list_base_models, list_loras, read_safetensors_metadata
from core.storage.workspace import Workspace

JOB = "train_0123456789ab"


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    """A fresh workspace."""
    return Workspace(tmp_path / "ws").ensure()


def lora(path: Path, *, step: int | None = None, mtime: float | None = None) -> Path:
    """A real LoRA-shaped .safetensors file, with ai-toolkit's training_info when step is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "ss_output_name": path.stem}
    if step is not None:
        metadata["training_info"] = json.dumps({"step": step, "epoch": 0})
    save_file({"lora_down.weight": np.zeros((4, 8), dtype=np.float32)}, str(path), metadata=metadata)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def write(path: Path, data: bytes) -> Path:
    """Create path with data, making its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_loras_with_steps_process_ids_and_order(ws: Workspace) -> None:
    out = ws.output
    lora(out / JOB / "cat" / "cat_000000250.safetensors", mtime=1_000)
    lora(out / JOB / "cat" / "cat_000000500.safetensors", step=499, mtime=2_000)
    lora(out / JOB / "cat" / "cat.safetensors", step=1000, mtime=3_000)
    lora(out / "manual" / "dog.safetensors", mtime=500)
    found = list_loras(ws)
    assert [f.name for f in found] == [
        "cat.safetensors",
        "cat_000000500.safetensors",
        "cat_000000250.safetensors",
        "dog.safetensors",
    ]
    final, five_hundred, two_fifty, dog = found
    assert (final.step, final.final, final.process_id) == (1000, True, JOB)
    assert (five_hundred.step, five_hundred.final) == (500, False)  # the name decides, not the metadata
    assert (two_fifty.step, two_fifty.process_id) == (250, JOB)
    assert (dog.step, dog.final, dog.process_id) == (None, True, None)
    assert final.path == f"output/{JOB}/cat/cat.safetensors"
    assert final.size == (out / JOB / "cat" / "cat.safetensors").stat().st_size
    assert final.modified == "1970-01-01T00:50:00Z"


def test_loras_skip_generated_bundles_hidden_and_diffusers_parts(ws: Workspace) -> None:
    lora(ws.output / JOB / "cat" / "cat.safetensors", step=10)
    lora(ws.generated / "gen_0123456789ab" / "x.safetensors")
    lora(ws.output / "bundles" / "y.safetensors")
    lora(ws.output / JOB / ".trash" / "z.safetensors")
    lora(ws.output / JOB / "full_000000100" / "transformer" / "diffusion_pytorch_model.safetensors")
    write(ws.output / JOB / "full_000000100" / "transformer" / "config.json", b"{}")
    assert [f.name for f in list_loras(ws)] == ["cat.safetensors"]


@pytest.mark.parametrize(
    "content",
    [b"", b"abc", struct.pack("<Q", 10**12) + b"{}", struct.pack("<Q", 5) + b"{not json", struct.pack("<Q", 2) + b"[]"],
)
def test_bad_safetensors_are_tolerated(ws: Workspace, content: bytes) -> None:
    write(ws.output / JOB / "cat" / "cat.safetensors", content)
    assert read_safetensors_metadata(ws.output / JOB / "cat" / "cat.safetensors") is None
    (only,) = list_loras(ws)
    assert (only.step, only.final) == (None, True)


def test_metadata_without_training_info(ws: Workspace) -> None:
    path = lora(ws.output / "x.safetensors")
    assert read_safetensors_metadata(path) == {"format": "pt", "ss_output_name": "x"}
    assert list_loras(ws)[0].step is None


def test_find_lora_newest_wins(ws: Workspace) -> None:
    old = lora(ws.output / "train_aaaaaaaaaaaa" / "cat" / "cat.safetensors", mtime=1_000)
    new = lora(ws.output / "train_bbbbbbbbbbbb" / "cat" / "cat.safetensors", mtime=2_000)
    lora(ws.generated / "gen_x" / "cat.safetensors", mtime=3_000)
    assert find_lora(ws, "cat.safetensors") == new.resolve()
    assert find_lora(ws, "cat") == new.resolve()
    os.utime(old, (4_000, 4_000))
    assert find_lora(ws, "cat.safetensors") == old.resolve()
    assert find_lora(ws, "dog.safetensors") is None


@pytest.mark.parametrize("name", ["../cat.safetensors", "a/cat.safetensors", "", "..", "x\x00"])
def test_find_lora_refuses_paths(ws: Workspace, name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        find_lora(ws, name)
    assert caught.value.field == "lora"


def test_empty_workspace_has_no_models(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "bare")
    assert list_loras(ws) == []
    assert list_base_models(ws) == []


def hub_repo(cache: Path, folder: str, revisions: dict[str, dict[str, bytes]]) -> Path:
    """A hub-cache repo: blobs by content hash, snapshots/<rev>/<file> linking to them, refs/main."""
    repo = cache / folder
    for revision, files in revisions.items():
        (repo / "snapshots" / revision).mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            blob = write(repo / "blobs" / hashlib.sha256(data).hexdigest(), data)
            link = repo / "snapshots" / revision / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        write(repo / "refs" / "main", revision.encode())
    return repo


def test_base_models_local_and_hub_cache(ws: Workspace, tmp_path: Path) -> None:
    sdxl = ws.models / "sdxl-base"
    write(sdxl / "model_index.json", b'{"_class_name": "StableDiffusionXLPipeline"}')
    write(sdxl / "unet" / "diffusion_pytorch_model.safetensors", b"u" * 1000)
    write(sdxl / "unet" / "config.json", b"{}")
    write(ws.models / "checkpoints" / "dream.safetensors", b"c" * 300)
    write(ws.models / "old.ckpt", b"k" * 200)
    write(ws.models / "readme.md", b"not a model")
    hub_repo(
        ws.hf_cache / "hub",
        "models--black-forest-labs--FLUX.1-dev",
        {"abc123": {"model_index.json": b"{}", "transformer/w.safetensors": b"t" * 5000}},
    )
    write(ws.hf_cache / "hub" / "models--black-forest-labs--FLUX.1-dev" / "blobs" / "part.incomplete", b"p" * 99)
    hub_repo(ws.hf_cache, "models--openai--clip-vit-large-patch14", {"r1": {"config.json": b"{}"}, "r2": {}})
    write(ws.hf_cache / "datasets--x--y" / "snapshots" / "r" / "data.csv", b"a,b")
    extra = tmp_path / "home-cache"
    hub_repo(extra, "models--gpt2", {"main1": {"config.json": b"{}"}})

    models = {m.name: m for m in list_base_models(ws, extra_caches=[extra, ws.hf_cache])}
    assert set(models) == {
        "sdxl-base",
        "checkpoints/dream.safetensors",
        "old.ckpt",
        "black-forest-labs/FLUX.1-dev",
        "openai/clip-vit-large-patch14",
        "gpt2",
    }
    local = models["sdxl-base"]
    assert (local.source, local.format, local.path, local.repo_id) == ("local", "diffusers", "models/sdxl-base", None)
    assert local.size == len(b'{"_class_name": "StableDiffusionXLPipeline"}') + 1000 + 2
    assert models["checkpoints/dream.safetensors"].format == "single_file"
    assert models["checkpoints/dream.safetensors"].size == 300
    flux = models["black-forest-labs/FLUX.1-dev"]
    assert (flux.source, flux.format, flux.repo_id, flux.revisions) == (
        "hf_cache",
        "diffusers",
        "black-forest-labs/FLUX.1-dev",
        ["abc123"],
    )
    assert flux.size == 2 + 5000  # blobs only, the unfinished download left out
    assert flux.path == "models/huggingface/hub/models--black-forest-labs--FLUX.1-dev"
    clip = models["openai/clip-vit-large-patch14"]
    assert (clip.format, clip.revisions) == ("hub", ["r1", "r2"])
    gpt2 = models["gpt2"]
    assert gpt2.path == str((extra / "models--gpt2").resolve())
    assert json.loads(json.dumps(gpt2.to_dict()))["repo_id"] == "gpt2"
