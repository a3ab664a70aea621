"""GPU detection from nvidia-smi's CSV and the LORAPOD_GPUS slot list."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu import devices
from gpu.devices import GpuInfo, detect_gpus, parse_gpu_list, parse_nvidia_smi_csv

TWO_GPUS = [GpuInfo(0, "NVIDIA H100 80GB HBM3", 81559, 0), GpuInfo(1, "NVIDIA H100 80GB HBM3", 81559, 1234)]


def test_nvidia_smi_csv() -> None:
    text = "0, NVIDIA H100 80GB HBM3, 81559, 0\n1, NVIDIA H100 80GB HBM3, 81559, 1234\n"
    assert parse_nvidia_smi_csv(text) == TWO_GPUS


def test_nvidia_smi_csv_odd_rows() -> None:
    text = (
        "WARNING: infoROM is corrupted at gpu 0000:01:00.0\n"
        "\n"
        "0, NVIDIA A100-SXM4-40GB, [N/A], [N/A]\n"
        "1, Some GPU, with a comma, 24576, 100\n"
        "garbage\n"
    )
    assert parse_nvidia_smi_csv(text) == [
        GpuInfo(0, "NVIDIA A100-SXM4-40GB", None, None),
        GpuInfo(1, "Some GPU, with a comma", 24576, 100),
    ]


def test_detect_gpus_without_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices.shutil, "which", lambda name: None)
    assert detect_gpus() == []


def test_detect_gpus_tolerates_a_failing_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\necho 'NVIDIA-SMI has failed because it could not communicate with the driver' >&2\nexit 9\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == []


def test_detect_gpus_reads_nvidia_smi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text('#!/bin/sh\necho "$@" > "${0%/*}/args"\necho "0, NVIDIA L4, 23034, 5"\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert detect_gpus() == [GpuInfo(0, "NVIDIA L4", 23034, 5)]
    assert (tmp_path / "args").read_text().split() == devices.NVIDIA_SMI_QUERY


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0,1", ["0", "1"]),
        (" 1 , 0 ", ["1", "0"]),
        ("1", ["1"]),
        ("0,0", ["0", "0"]),  # two slots on one large GPU
        ("01", ["1"]),
        (None, ["0", "1"]),
        ("", ["0", "1"]),
        ("  ", ["0", "1"]),
    ],
)
def test_gpu_list_with_two_gpus(text: str | None, expected: list[str]) -> None:
    assert parse_gpu_list(text, TWO_GPUS) == expected


def test_no_gpus_means_one_cpu_slot() -> None:
    assert parse_gpu_list(None, []) == [None]
    assert parse_gpu_list("", []) == [None]
    # Without detection (no nvidia-smi in a container) an explicit list is trusted.
    assert parse_gpu_list("2,3", []) == ["2", "3"]


@pytest.mark.parametrize("text", ["a", "0,", "0;1", "-1", "1.5", "0,,1", "gpu0", "²"])
def test_malformed_gpu_list(text: str) -> None:
    with pytest.raises(ValueError, match="comma-separated"):
        parse_gpu_list(text, TWO_GPUS)


def test_unknown_gpu_index() -> None:
    with pytest.raises(ValueError, match=r"GPU 2 is not among the detected GPUs \(0, 1\)"):
        parse_gpu_list("0,2", TWO_GPUS)
