"""Files a GPU job leaves behind: LoRA checkpoints, the final LoRA, samples, images."""

from __future__ import annotations

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


# TODO(H1): scan_training_output(save_root, job_name) -> list[Artifact]
