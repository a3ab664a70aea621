"""Files a GPU job leaves behind: LoRA checkpoints, the final LoRA, samples, images."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Artifact:
    """One output file of a job."""

    name: str  # unique within the job, relative to its output folder, e.g. "samples/17__000000250_0.jpg"
    kind: str  # "lora" (final), "checkpoint", "sample", "config", "image", "metadata", "log"
    path: Path  # absolute
    size: int
    step: int | None = None
    modified: float = 0.0  # mtime, seconds since the epoch


SAMPLE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".mp4"})
# ai-toolkit names samples <ms-epoch>__<step:09d>_<prompt index>.<fmt> (note the double underscore).
_SAMPLE_NAME = re.compile(r"^\d+__(\d+)_\d+\.[A-Za-z0-9]+$")
_KIND_ORDER = {"lora": 0, "checkpoint": 1, "sample": 2, "config": 3}


def _skipped(name: str) -> bool:
    """Hidden files (.thumbs, .tmp too) and files still being written."""
    return name.startswith(".") or name.endswith((".part", ".tmp"))


def _artifact(entry: os.DirEntry[str], name: str, kind: str, step: int | None) -> Artifact | None:
    """An Artifact for a directory entry, or None when it vanished or is not a plain file."""
    try:
        if not entry.is_file(follow_symlinks=False):
            return None
        info = entry.stat(follow_symlinks=False)
    except FileNotFoundError:  # ai-toolkit prunes old checkpoints while we scan
        return None
    return Artifact(name=name, kind=kind, path=Path(entry.path), size=info.st_size, step=step, modified=info.st_mtime)


def _entries(folder: Path) -> list[os.DirEntry[str]]:
    """The entries of a folder, or none when it does not exist (yet)."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _sort_key(artifact: Artifact) -> tuple[int, bool, int, str]:
    """Lora first, then checkpoints by step, then samples by step then name, then config."""
    return (_KIND_ORDER[artifact.kind], artifact.step is None, artifact.step or 0, artifact.name)


def scan_training_output(save_root: Path, job_name: str) -> list[Artifact]:
    """List the LoRA files, checkpoints, samples and config.yaml in an ai-toolkit output folder, in a stable order."""
    save_root = Path(save_root).absolute()
    checkpoint = re.compile(rf"^{re.escape(job_name)}_(\d{{9,}})\.safetensors$")
    found: list[Artifact | None] = []
    for entry in _entries(save_root):
        name = entry.name
        if _skipped(name):
            continue
        if name == f"{job_name}.safetensors":
            found.append(_artifact(entry, name, "lora", None))
        elif name == "config.yaml":
            found.append(_artifact(entry, name, "config", None))
        elif match := checkpoint.match(name):
            found.append(_artifact(entry, name, "checkpoint", int(match[1])))
    for entry in _entries(save_root / "samples"):
        name = entry.name
        if _skipped(name) or os.path.splitext(name)[1].lower() not in SAMPLE_EXTENSIONS:
            continue
        match = _SAMPLE_NAME.match(name)
        found.append(_artifact(entry, f"samples/{name}", "sample", int(match[1]) if match else None))
    return sorted((a for a in found if a is not None), key=_sort_key)
