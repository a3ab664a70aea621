"""Captioning end to end on the CPU: the warm caption worker with a tiny random BLIP model, and caption text rules."""

from __future__ import annotations

import itertools
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from gpu.caption_protocol import CaptionParams, compose_caption
from gpu.captioning import CaptioningOutcome, CaptioningRequest, WarmCaptioner
from gpu.progress import Progress
from tests.fakes.tiny_caption import build_tiny_captioner

REPO_ROOT = Path(__file__).resolve().parents[2]
SENTINEL_TOKEN = "hf_lorapod_caption_sentinel_token"
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "HF_TOKEN": SENTINEL_TOKEN, "OMP_NUM_THREADS": "1"}
on_module_loop = pytest.mark.asyncio(loop_scope="module")
_ids = itertools.count()


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the tiny captioning model and room for datasets and logs."""
    base = tmp_path_factory.mktemp("captioning")
    build_tiny_captioner(base / "models" / "tiny-blip")
    (base / "logs").mkdir()
    return base


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def captioner(root: Path) -> AsyncIterator[WarmCaptioner]:
    """One warm captioner shared by the module's tests, as a GPU slot would keep it."""
    warm = make_captioner(root)
    try:
        yield warm
    finally:
        await warm.shutdown()


def make_captioner(root: Path, python: str = sys.executable) -> WarmCaptioner:
    """A captioner on this interpreter (it has transformers), one log per job."""
    return WarmCaptioner(
        python=python,
        gpu=None,
        log_path_for=lambda job_id: root / "logs" / f"{job_id}.log",
        extra_env=WORKER_ENV,
        idle_seconds=600.0,
        cwd=REPO_ROOT,
    )


def make_dataset(root: Path, n: int, captioned: tuple[int, ...] = ()) -> Path:
    """n small PNGs; the images listed in captioned get a caption 'old caption <i>'."""
    folder = root / "datasets" / f"ds{next(_ids)}"
    folder.mkdir(parents=True)
    for index in range(n):
        Image.new("RGB", (24, 16), (10 * index % 256, 120, 200)).save(folder / f"img_{index}.png")
        if index in captioned:
            (folder / f"img_{index}.txt").write_text(f"old caption {index}\n")
    return folder


def make_request(root: Path, images: list[Path], **overrides: Any) -> CaptioningRequest:
    """A request on the tiny model; overrides change any field."""
    fields: dict[str, Any] = {
        "job_id": f"cap_test{next(_ids):04d}",
        "model": str(root / "models" / "tiny-blip"),
        "prefix": "",
        "suffix": "",
        "trigger_word": None,
        "max_length": 8,
        "overwrite": False,
        "images": images,
    }
    fields.update(overrides)
    return CaptioningRequest(**fields)


def assert_whole_captions(folder: Path, prefix: str, suffix: str) -> None:
    """Every caption is an old one or a whole new one; no stray visible file is left."""
    for path in folder.iterdir():
        if path.name.startswith("."):
            continue
        assert path.suffix in (".png", ".txt"), path
        if path.suffix == ".txt":
            text = path.read_text()
            assert text.endswith("\n")
            assert text.startswith("old caption ") or (text.startswith(prefix) and text.rstrip("\n").endswith(suffix))


@on_module_loop
async def test_captions_exactly_the_images_without_one(captioner: WarmCaptioner, root: Path) -> None:
    folder = make_dataset(root, 4, captioned=(1, 3))
    images = sorted(folder.glob("*.png"))
    progress: list[Progress] = []
    seen: list[tuple[Path, str]] = []
    request = make_request(root, images, prefix="a photo of [trigger],", suffix="high quality", trigger_word="sks")
    outcome = await captioner.caption(request, on_progress=progress.append, on_caption=lambda p, t: seen.append((p, t)))

    assert outcome.status == "completed", outcome.error
    assert outcome.written == [folder / "img_0.txt", folder / "img_2.txt"]
    assert outcome.skipped == 2 and outcome.loads == 1
    assert [p for p, _ in seen] == outcome.written
    for path, text in seen:
        written = path.read_text()
        assert written == text + "\n"
        assert written.startswith("a photo of sks, ") and written.endswith(" high quality\n")
        assert "[trigger]" not in written and "\n" not in written[:-1]
    assert (folder / "img_1.txt").read_text() == "old caption 1\n"
    assert (folder / "img_3.txt").read_text() == "old caption 3\n"
    assert progress[-1].step == progress[-1].total == 4
    assert [p.step for p in progress] == sorted(p.step for p in progress)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


@on_module_loop
async def test_overwrite_rewrites_every_caption_and_the_model_stays_warm(captioner: WarmCaptioner, root: Path) -> None:
    folder = make_dataset(root, 3, captioned=(0, 1, 2))
    pid = captioner.pid
    outcome = await captioner.caption(make_request(root, sorted(folder.glob("*.png")), overwrite=True))
    assert outcome.status == "completed", outcome.error
    assert len(outcome.written) == 3 and outcome.skipped == 0
    assert not any(p.read_text().startswith("old caption") for p in folder.glob("*.txt"))
    assert captioner.pid == pid and outcome.loads == 1  # the same worker, the model loaded once
    assert captioner.loaded_model == str(root / "models" / "tiny-blip")


@on_module_loop
async def test_a_trigger_word_without_placeholder_is_prepended(captioner: WarmCaptioner, root: Path) -> None:
    folder = make_dataset(root, 1)
    outcome = await captioner.caption(make_request(root, [folder / "img_0.png"], trigger_word="ohwx"))
    assert outcome.status == "completed", outcome.error
    assert (folder / "img_0.txt").read_text().startswith("ohwx, ")


@on_module_loop
async def test_cancel_stops_before_the_next_image_and_leaves_whole_files(captioner: WarmCaptioner, root: Path) -> None:
    folder = make_dataset(root, 40, captioned=(5, 6))
    request = make_request(root, sorted(folder.glob("*.png")), prefix="pre", suffix="post")
    outcome = await captioner.caption(request, on_caption=lambda _p, _t: captioner.cancel())
    assert outcome.status == "cancelled" and outcome.error is None
    assert 1 <= len(outcome.written) < 38
    assert len(list(folder.glob("*.txt"))) == len(outcome.written) + 2
    assert_whole_captions(folder, "pre", "post")
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]
    assert captioner.running  # still warm for the next job


@on_module_loop
async def test_a_killed_worker_fails_its_request_leaves_whole_files_and_the_next_starts_fresh(
    captioner: WarmCaptioner, root: Path
) -> None:
    folder = make_dataset(root, 40, captioned=(0,))
    old_pid = captioner.pid
    assert old_pid

    def kill(_path: Path, _text: str) -> None:
        os.killpg(old_pid, signal.SIGKILL)

    outcome = await captioner.caption(make_request(root, sorted(folder.glob("*.png")), suffix="end"), on_caption=kill)
    assert outcome.status == "failed"
    assert outcome.error is not None and "caption worker died" in outcome.error and "SIGKILL" in outcome.error
    assert_whole_captions(folder, "", "end")
    assert (folder / "img_0.txt").read_text() == "old caption 0\n"

    again = await captioner.caption(make_request(root, sorted(folder.glob("*.png")), suffix="end"))
    assert again.status == "completed", again.error
    assert captioner.pid != old_pid and again.loads == 1
    assert len(list(folder.glob("*.txt"))) == 40


@on_module_loop
async def test_a_model_that_cannot_caption_fails_clearly_and_the_worker_carries_on(
    captioner: WarmCaptioner, root: Path, tmp_path: Path
) -> None:
    folder = make_dataset(root, 1)
    not_a_model = tmp_path / "empty-model"
    not_a_model.mkdir()
    failed = await captioner.caption(make_request(root, [folder / "img_0.png"], model=str(not_a_model)))
    assert failed.status == "failed" and failed.error and "config.json" in failed.error
    assert not (folder / "img_0.txt").exists()
    ok = await captioner.caption(make_request(root, [folder / "img_0.png"]))
    assert ok.status == "completed", ok.error


@on_module_loop
async def test_an_undecodable_image_is_left_uncaptioned_and_the_job_goes_on(
    captioner: WarmCaptioner, root: Path
) -> None:
    folder = make_dataset(root, 2)
    (folder / "img_0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)  # a PNG header, no image
    request = make_request(root, sorted(folder.glob("*.png")))
    outcome = await captioner.caption(request)
    assert outcome.status == "completed", outcome.error
    assert outcome.unreadable == [folder / "img_0.png"] and outcome.written == [folder / "img_1.txt"]
    assert not (folder / "img_0.txt").exists()
    assert f"cannot read {folder / 'img_0.png'}" in (root / "logs" / f"{request.job_id}.log").read_text()


@on_module_loop
async def test_no_token_in_captions_or_logs(captioner: WarmCaptioner, root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and path.suffix in (".txt", ".log"):
            assert SENTINEL_TOKEN not in path.read_text(errors="replace"), path


@on_module_loop
async def test_a_missing_interpreter_fails_the_request_cleanly(root: Path) -> None:
    folder = make_dataset(root, 1)
    broken = make_captioner(root, python="/nonexistent/python3")
    outcome: CaptioningOutcome = await broken.caption(make_request(root, [folder / "img_0.png"]))
    assert outcome.status == "failed" and outcome.error and "could not start the caption worker" in outcome.error


def params(**overrides: Any) -> CaptionParams:
    values: dict[str, Any] = {
        "model": "m",
        "prefix": "",
        "suffix": "",
        "trigger_word": None,
        "max_length": 10,
        "overwrite": False,
    }
    values.update(overrides)
    return CaptionParams(**values)


def test_compose_caption_rules() -> None:
    assert compose_caption(" a  cat\non a table ", params()) == "a cat on a table"
    assert compose_caption("a cat", params(prefix="photo of [trigger],", trigger_word="sks")) == "photo of sks, a cat"
    assert compose_caption("a cat", params(trigger_word="sks")) == "sks, a cat"
    assert compose_caption("a cat", params(prefix="[trigger]", suffix="4k")) == "[trigger] a cat 4k"
    assert compose_caption("", params(trigger_word="sks")) == "sks"
    assert len(compose_caption("word " * 2000, params())) == 4000
