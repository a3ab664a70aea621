"""Retention of bulk_download bundles: removed once unused for the retention period, never while read."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from core.contract.dispatcher import dispatch
from core.jobs.service import JobService
from core.settings import Settings
from core.storage.bundles import BundleKeeper
from core.storage.workspace import Workspace
from tests.fakes.trainer import make_dataset
from tests.helpers import make_settings


def bundle(folder: Path, name: str, age: float, now: float, size: int = 10) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"z" * size)
    os.utime(path, (now - age, now - age))
    return path


def test_prune_removes_only_bundles_unused_for_the_retention(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws").ensure()
    keeper = BundleKeeper(workspace, retention_seconds=100)
    now = time.time()
    old = bundle(keeper.folder, "old.zip", 200, now)
    young = bundle(keeper.folder, "young.zip", 50, now)
    being_read = bundle(keeper.folder, "read-now.zip", 200, now)
    read_lately = bundle(keeper.folder, "read-lately.zip", 200, now, size=7)
    leftover = bundle(keeper.folder, ".tmp-interrupted.zip", 200, now)
    with keeper.reading(read_lately):
        pass  # a chunk was served just now: the next one is probably coming
    with keeper.reading(being_read):
        assert sorted(keeper.prune(now)) == sorted([old, leftover])
        assert keeper.usage() == {"path": "output/bundles", "count": 3, "bytes": 27, "retention_seconds": 100}
    assert keeper.prune(now) == []  # read-now was read just now too
    assert sorted(p.name for p in keeper.prune(now + 200)) == sorted([young.name, being_read.name, read_lately.name])
    assert keeper.usage()["count"] == 0


def test_zero_retention_keeps_bundles_and_other_files_are_not_tracked(tmp_path: Path) -> None:
    workspace = Workspace(tmp_path / "ws").ensure()
    now = time.time()
    keeper = BundleKeeper(workspace, retention_seconds=0)
    kept = bundle(keeper.folder, "kept.zip", 10**6, now)
    assert keeper.prune(now) == [] and kept.exists()
    elsewhere = bundle(workspace.output / "train_x", "lora.safetensors", 10**6, now)
    with BundleKeeper(workspace, retention_seconds=1).reading(elsewhere):
        pass
    assert BundleKeeper(workspace, retention_seconds=1).prune(now) == [kept]
    assert elsewhere.exists()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, bundle_retention_seconds=1)


async def test_housekeeping_removes_expired_bundles_and_health_shows_them(service: JobService) -> None:
    make_dataset(service.workspace.training_data / "faces", 2)
    request = {"type": "bulk_download", "directory": "training_data/faces"}
    out = await dispatch(service, request)
    archive = service.workspace.root / out["file_path"]
    assert archive.is_file()
    shown = service.health()["bundles"]
    assert shown["count"] == 1 and shown["bytes"] == archive.stat().st_size and shown["retention_seconds"] == 1
    deadline = time.monotonic() + 20
    while archive.exists():  # the service's housekeeping loop (every 2 s) removes it
        assert time.monotonic() < deadline, "the bundle was never removed"
        await asyncio.sleep(0.1)
    assert service.health()["bundles"]["count"] == 0
    # A caller that still asks for a later chunk gets the same bundle, rebuilt.
    again = await dispatch(service, {**request, "offset": 10})
    assert again["file_path"] == out["file_path"] and again["sha256"] == out["sha256"]
