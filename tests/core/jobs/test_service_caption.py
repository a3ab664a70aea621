"""Caption jobs and autocaption through the core service: real captioning on the CPU with a tiny random BLIP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlmodel import Session, func, select

from core.errors import InvalidInput
from core.jobs.caption import CaptionOptions, CaptionParams
from core.jobs.rows import Job, JobStatus
from core.jobs.service import JobService
from gpu.caption_protocol import TEMP_PREFIX
from tests.fakes.tiny_caption import build_tiny_captioner, make_images
from tests.helpers import train_params

MODEL = "models/tiny-blip"


@pytest.fixture
def tiny_captioner(service: JobService, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two cores: one torch thread is the fastest here
    build_tiny_captioner(service.workspace.models / "tiny-blip")
    return MODEL


def caption_params(**overrides: object) -> CaptionParams:
    values: dict[str, object] = {"training_name": "faces", "model": MODEL, "max_length": 6}
    values.update(overrides)
    return CaptionParams.model_validate(values)


async def test_a_caption_job_captions_the_images_without_one_and_the_model_stays_warm(
    service: JobService, tiny_captioner: str
) -> None:
    folder = make_images(service.workspace.training_data / "faces", 3, captioned=(1,))
    (folder / f"{TEMP_PREFIX}img_00.txt.abc.part").write_text("half a cap")  # left by a killed worker
    job = service.submit_caption(caption_params(prefix="a photo of [trigger],", suffix="studio", trigger_word="sks"))
    assert job.id.startswith("cap_") and job.type == "caption" and job.dataset == "faces"
    done = await service.wait(job.id, timeout=120)
    assert done.status == JobStatus.completed, done.error
    assert done.step == done.total_steps == 2  # the two images that had no caption
    assert done.config["captioning"] == {
        "model": str(service.workspace.models / "tiny-blip"),
        "images": 2,
        "written": 2,
        "skipped": 0,
        "unreadable": [],
    }
    for index in (0, 2):
        text = (folder / f"img_{index:02d}.txt").read_text()
        assert text.startswith("a photo of sks, ") and text.endswith(" studio\n")
    assert (folder / "img_01.txt").read_text() == "old caption 1\n"
    assert not list(folder.glob(".*"))  # the stale temporary is gone
    assert [a["kind"] for a in done.artifacts] == ["log"]
    assert "[lorapod-caption]" in (service.workspace.root / str(done.log_path)).read_text()

    slot = service.scheduler.slots[0]
    assert slot.captioner is not None and slot.captioner.running
    pid = slot.captioner.pid
    again = await service.wait(service.submit_caption(caption_params(overwrite=True)).id, timeout=120)
    assert again.status == JobStatus.completed, again.error
    assert again.config["captioning"]["written"] == 3
    assert (folder / "img_01.txt").read_text() != "old caption 1\n"
    assert slot.captioner.pid == pid and slot.captioner.loads == 1  # the same worker, the model loaded once


async def test_nothing_to_caption_completes_without_a_worker(service: JobService, tiny_captioner: str) -> None:
    make_images(service.workspace.training_data / "faces", 2, captioned=(0, 1))
    done = await service.wait(service.submit_caption(caption_params()).id, timeout=60)
    assert done.status == JobStatus.completed, done.error
    assert done.config["captioning"]["images"] == 0 and done.total_steps is None
    captioner = service.scheduler.slots[0].captioner
    assert captioner is None or not captioner.running


async def test_cancel_a_caption_job_leaves_whole_captions(service: JobService, tiny_captioner: str) -> None:
    folder = make_images(service.workspace.training_data / "faces", 60, captioned=(3,))
    job = service.submit_caption(caption_params(suffix="END"))
    while service.get(job.id).step < 1:
        await asyncio.sleep(0.02)
    service.cancel(job.id)
    final = await service.wait(job.id, timeout=120)
    assert final.status == JobStatus.cancelled
    captions = sorted(folder.glob("*.txt"))
    assert 1 < len(captions) < 60
    for path in captions:
        text = path.read_text()
        assert text == "old caption 3\n" or text.endswith(" END\n") or text == "END\n"
    assert not list(folder.glob(".*"))


async def test_autocaption_is_the_first_phase_of_the_training(service: JobService, tiny_captioner: str) -> None:
    folder = make_images(service.workspace.training_data / "faces", 3, captioned=(0,))
    job = service.submit_training(train_params(steps=4), autocaption=CaptionOptions(model=MODEL, prefix="pic of"))
    assert job.config["autocaption"]["overwrite"] is False and job.params["autocaption"]["prefix"] == "pic of"
    phases: list[str | None] = []
    final = await service.wait(job.id, timeout=120, on_change=lambda j: phases.append(j.config.get("phase")))
    assert final.status == JobStatus.completed, final.error
    assert "captioning" in phases and phases[-1] == "training"
    assert phases.index("captioning") < phases.index("training")
    assert final.step == final.total_steps == 4  # the training's own steps once it runs
    assert final.config["captioning"]["written"] == 2
    assert (folder / "img_00.txt").read_text() == "old caption 0\n"
    assert all((folder / f"img_{i:02d}.txt").read_text().startswith("pic of ") for i in (1, 2))
    log_text = (service.workspace.root / str(final.log_path)).read_text()
    assert log_text.index("[lorapod-caption]") < log_text.index("Dataset: ")  # captions first, then the trainer
    assert service.scheduler.slots[0].captioner is None  # given up so the trainer had the GPU


async def test_a_failed_autocaption_fails_the_training_before_it_starts(service: JobService, tmp_path: Path) -> None:
    make_images(service.workspace.training_data / "faces", 2)
    broken = service.workspace.models / "not-a-captioner"
    broken.mkdir(parents=True)
    (broken / "config.json").write_text('{"architectures": ["NoSuchModel"]}')
    job = service.submit_training(train_params(steps=4), autocaption=CaptionOptions(model="models/not-a-captioner"))
    final = await service.wait(job.id, timeout=120)
    assert final.status == JobStatus.failed
    assert final.error and final.error.startswith("autocaption: RuntimeError: could not load the captioning model")
    assert final.config["phase"] == "captioning" and final.step == 0
    assert "Dataset: " not in (service.workspace.root / str(final.log_path)).read_text()  # no trainer ran


@pytest.mark.parametrize(
    ("overrides", "field", "reason"),
    [
        ({"model": "blip"}, "model", "unknown model 'blip'"),
        ({"model": "models/missing"}, "model", "is not a transformers model folder"),
        ({"model": "Salesforce/not-cached"}, "model", "is not in the Hugging Face cache"),
        ({"training_name": "nothing"}, "training_name", "does not exist"),
        ({"training_name": "empty"}, "training_name", "holds no images"),
    ],
)
async def test_bad_caption_input_is_refused_naming_the_field(
    service: JobService, overrides: dict[str, object], field: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    make_images(service.workspace.training_data / "faces", 1)
    (service.workspace.training_data / "empty").mkdir()
    (service.workspace.training_data / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(InvalidInput) as caught:
        service.submit_caption(caption_params(**overrides))
    assert caught.value.field == field and reason in caught.value.reason
    with Session(service.engine) as session:
        assert session.exec(select(func.count()).select_from(Job)).one() == 0


async def test_cancel_during_the_autocaption_phase_never_starts_the_trainer(
    service: JobService, tiny_captioner: str
) -> None:
    folder = make_images(service.workspace.training_data / "faces", 60)
    job = service.submit_training(train_params(steps=4), autocaption=CaptionOptions(model=MODEL, suffix="END"))
    while (current := service.get(job.id)).config.get("phase") != "captioning" or current.step < 1:
        await asyncio.sleep(0.02)
    service.cancel(job.id)
    final = await service.wait(job.id, timeout=120)
    assert final.status == JobStatus.cancelled and final.config["phase"] == "captioning"
    assert "Dataset: " not in (service.workspace.root / str(final.log_path)).read_text()  # no trainer ran
    captions = list(folder.glob("*.txt"))
    assert 1 <= len(captions) < 60 and all(p.read_text().endswith("END\n") for p in captions)


async def test_a_training_takes_the_slot_from_the_warm_captioner(service: JobService, tiny_captioner: str) -> None:
    make_images(service.workspace.training_data / "faces", 2)
    captioned = await service.wait(service.submit_caption(caption_params()).id, timeout=120)
    assert captioned.status == JobStatus.completed, captioned.error
    slot = service.scheduler.slots[0]
    assert slot.captioner is not None and slot.captioner.running
    worker_pid = slot.captioner.pid
    train = await service.wait(service.submit_training(train_params(steps=3)).id, timeout=60)
    assert train.status == JobStatus.completed, train.error
    assert slot.captioner is None  # shut down so the trainer got the whole GPU
    assert worker_pid is not None and not Path(f"/proc/{worker_pid}").exists()
