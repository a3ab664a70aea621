"""Scanning an ai-toolkit output folder for the final LoRA, checkpoints, samples and config."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gpu import artifacts as artifacts_module
from gpu.artifacts import Artifact, scan_training_output


def touch(path: Path, size: int = 3) -> Path:
    """A file of size bytes, with its folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def names(found: list[Artifact]) -> list[str]:
    """The artifacts' names, in order."""
    return [a.name for a in found]


def test_a_full_output_folder(tmp_path: Path) -> None:
    root = tmp_path / "tiny_lora"
    touch(root / "config.yaml", 10)
    touch(root / "tiny_lora_000000500.safetensors", 500)
    touch(root / "tiny_lora_000000250.safetensors", 250)
    touch(root / "tiny_lora.safetensors", 1000)
    touch(root / "samples" / "1724265061999__000000500_0.jpg")
    touch(root / "samples" / "1724265061123__000000250_1.png")
    touch(root / "samples" / "1724265061120__000000250_0.jpg")
    touch(root / "samples" / "1724265061000__000000000_0.webp")
    touch(root / "samples" / "1724265062000__000000750_0.mp4")

    found = scan_training_output(root, "tiny_lora")

    assert names(found) == [
        "tiny_lora.safetensors",
        "tiny_lora_000000250.safetensors",
        "tiny_lora_000000500.safetensors",
        "samples/1724265061000__000000000_0.webp",
        "samples/1724265061120__000000250_0.jpg",
        "samples/1724265061123__000000250_1.png",
        "samples/1724265061999__000000500_0.jpg",
        "samples/1724265062000__000000750_0.mp4",
        "config.yaml",
    ]
    assert [a.kind for a in found] == ["lora", "checkpoint", "checkpoint"] + ["sample"] * 5 + ["config"]
    assert [a.step for a in found] == [None, 250, 500, 0, 250, 250, 500, 750, None]
    lora = found[0]
    assert lora.path == root / "tiny_lora.safetensors" and lora.path.is_absolute()
    assert lora.size == 1000
    assert lora.modified == pytest.approx(os.stat(lora.path).st_mtime)


def test_files_that_are_not_artifacts_are_skipped(tmp_path: Path) -> None:
    root = tmp_path / "job"
    touch(root / "job.safetensors")
    for name in [
        "optimizer.pt",
        ".job_config.json",
        ".hidden.safetensors",
        "job_000000100.safetensors.part",
        "job_000000100.safetensors.tmp",
        "log.txt",
        "env.json",
        "loss_log.db",
        "other_000000100.safetensors",  # another job's checkpoint
        "job_LoRA_100.safetensors",  # an embedding, not the LoRA
        "job_12.safetensors",  # not a 9-digit step
        "samples/.thumbs/1724265061123__000000250_0.jpg",
        "samples/.tmp/1724265061123__000000250_0.jpg",
        "samples/.1724265061123__000000250_0.jpg",
        "samples/1724265061123__000000250_0.jpg.part",
        "samples/notes.txt",
    ]:
        touch(root / name)
    (root / "job_000000200.safetensors").mkdir()  # a folder is not a file artifact
    assert names(scan_training_output(root, "job")) == ["job.safetensors"]


def test_sample_without_a_step_in_its_name_comes_after_the_numbered_ones(tmp_path: Path) -> None:
    root = tmp_path / "job"
    touch(root / "samples" / "b_custom.png")
    touch(root / "samples" / "1724265061123__000000250_0.JPG")
    found = scan_training_output(root, "job")
    assert [(a.name, a.step) for a in found] == [
        ("samples/1724265061123__000000250_0.JPG", 250),
        ("samples/b_custom.png", None),
    ]


def test_job_name_with_regex_characters(tmp_path: Path) -> None:
    root = tmp_path / "out"
    touch(root / "a.b+c_000000010.safetensors")
    touch(root / "aXb+c_000000010.safetensors")
    found = scan_training_output(root, "a.b+c")
    assert [(a.name, a.step) for a in found] == [("a.b+c_000000010.safetensors", 10)]


def test_missing_folder_gives_nothing(tmp_path: Path) -> None:
    assert scan_training_output(tmp_path / "not_yet", "job") == []


def test_a_file_vanishing_during_the_scan_is_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "job"
    doomed = touch(root / "job_000000100.safetensors")
    touch(root / "job_000000200.safetensors")
    real_artifact = artifacts_module._artifact

    def prune_first(entry: os.DirEntry[str], name: str, kind: str, step: int | None) -> Artifact | None:
        # ai-toolkit deletes an old checkpoint between our listing and our stat.
        if entry.name == doomed.name and doomed.exists():
            doomed.unlink()
        return real_artifact(entry, name, kind, step)

    monkeypatch.setattr(artifacts_module, "_artifact", prune_first)
    assert names(scan_training_output(root, "job")) == ["job_000000200.safetensors"]
