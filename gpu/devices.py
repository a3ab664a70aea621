"""Which GPUs this machine has, and which of them lorapod may use (one training slot per entry)."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

NVIDIA_SMI_QUERY = ["--query-gpu=index,name,memory.total,memory.used", "--format=csv,noheader,nounits"]
NVIDIA_SMI_TIMEOUT = 5.0
_INDEX = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One GPU as nvidia-smi reports it."""

    index: int
    name: str
    memory_total_mb: int | None
    memory_used_mb: int | None


def _megabytes(text: str) -> int | None:
    """A memory figure in MiB, or None for '[N/A]' and the like."""
    text = text.strip()
    return int(text) if _INDEX.fullmatch(text) else None


def parse_nvidia_smi_csv(text: str) -> list[GpuInfo]:
    """Parse `nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader,nounits` output."""
    gpus = []
    for line in text.splitlines():
        fields = [field.strip() for field in line.split(",")]
        if len(fields) < 4 or not _INDEX.fullmatch(fields[0]):
            continue  # a warning line or a malformed row
        # A name holding a comma splits into more fields; the two memory figures are always last.
        name = ", ".join(fields[1:-2])
        gpus.append(GpuInfo(int(fields[0]), name, _megabytes(fields[-2]), _megabytes(fields[-1])))
    return gpus


def detect_gpus() -> list[GpuInfo]:
    """The GPUs nvidia-smi sees; [] when it is absent or fails. Torch is not imported: it costs seconds."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return []
    try:
        result = subprocess.run(
            [binary, *NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if result.returncode != 0:
        return []
    return parse_nvidia_smi_csv(result.stdout)


def parse_gpu_list(text: str | None, detected: list[GpuInfo]) -> list[str | None]:
    """The GPU slots from LORAPOD_GPUS ('0,1'); unset means every detected GPU, or one CPU slot [None] if none.

    An index may repeat to run two trainings on one large GPU. A malformed list raises ValueError.
    """
    if text is None or not text.strip():
        return [str(gpu.index) for gpu in detected] or [None]
    indexes = [part.strip() for part in text.split(",")]
    for index in indexes:
        if not _INDEX.fullmatch(index):
            raise ValueError(f"must be comma-separated GPU indexes such as '0,1', but {text!r} holds {index!r}")
    known = {str(gpu.index) for gpu in detected}
    unknown = [index for index in indexes if known and str(int(index)) not in known]
    if unknown:
        raise ValueError(
            f"GPU {', '.join(unknown)} is not among the detected GPUs ({', '.join(sorted(known, key=int))})"
        )
    return [str(int(index)) for index in indexes]
