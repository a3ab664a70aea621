"""Generation jobs through the core service: queued like trainings, run on the slot's warm worker."""

from __future__ import annotations

import asyncio
import json

import pytest
from PIL import Image

from core.jobs.generation import GenerateParams
from core.jobs.rows import JobStatus
from core.jobs.service import JobService
from tests.fakes.tiny_sd import build_tiny_sd15
from tests.fakes.trainer import make_dataset
from tests.helpers import train_params


@pytest.fixture
def tiny_model(service: JobService, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # two cores: one torch thread is the fastest here
    build_tiny_sd15(service.workspace.models / "tiny-sd15")
    return "models/tiny-sd15"


def gen_params(model: str, **overrides: object) -> GenerateParams:
    values: dict[str, object] = {
        "prompt": "a photo of a cat",
        "base_model": model,
        "model_family": "sd15",
        "width": 72,
        "height": 64,
        "steps": 2,
        "seed": 7,
        "num_images": 2,
    }
    values.update(overrides)
    return GenerateParams.model_validate(values)


async def test_generation_job_writes_images_and_stays_warm(service: JobService, tiny_model: str) -> None:
    first = service.submit_generation(gen_params(tiny_model))
    assert first.id.startswith("gen_") and first.total_steps == 4
    done = await service.wait(first.id, timeout=120)
    assert done.status == JobStatus.completed, done.error
    images = [a for a in done.artifacts if a["kind"] == "image"]
    sidecars = [a for a in done.artifacts if a["kind"] == "metadata"]
    assert [a["name"] for a in images] == ["0.png", "1.png"] and len(sidecars) == 2
    for artifact in images:
        with Image.open(service.workspace.root / artifact["path"]) as image:
            assert image.size == (72, 64)
    meta = json.loads((service.workspace.root / sidecars[1]["path"]).read_text())
    assert meta["seed"] == 8  # image k uses seed + k
    assert done.output_dir == f"output/generated/{first.id}"
    assert done.step == done.total_steps == 4

    slot = service.scheduler.slots[0]
    assert slot.generator is not None and slot.generator.loads == 1
    second = await service.wait(service.submit_generation(gen_params(tiny_model, seed=1)).id, timeout=120)
    assert second.status == JobStatus.completed, second.error
    assert slot.generator.loads == 1  # the base model stayed loaded between the two jobs


async def test_training_takes_the_slot_from_the_warm_generator(service: JobService, tiny_model: str) -> None:
    make_dataset(service.workspace.training_data / "faces", 1)
    gen = await service.wait(service.submit_generation(gen_params(tiny_model, num_images=1)).id, timeout=120)
    assert gen.status == JobStatus.completed, gen.error
    slot = service.scheduler.slots[0]
    worker_pid = slot.generator.pid if slot.generator else None
    assert worker_pid
    train = await service.wait(service.submit_training(train_params(steps=3)).id, timeout=60)
    assert train.status == JobStatus.completed, train.error
    assert slot.generator is None  # shut down so the trainer gets the whole GPU


async def test_cancel_a_generation(service: JobService, tiny_model: str) -> None:
    job = service.submit_generation(gen_params(tiny_model, steps=150, num_images=4))
    while service.get(job.id).step < 1:
        await asyncio.sleep(0.05)
    service.cancel(job.id)
    final = await service.wait(job.id, timeout=120)
    assert final.status == JobStatus.cancelled
    assert len([a for a in final.artifacts if a["kind"] == "image"]) < 4


async def test_a_hub_model_is_read_offline_from_the_workspace_cache(
    service: JobService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repo id resolves through huggingface_hub's cache inside the workspace, with no network."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = service.workspace.hf_cache / "models--lorapod-test--tiny-sd15"
    build_tiny_sd15(repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)

    job = service.submit_generation(
        gen_params("lorapod-test/tiny-sd15", num_images=1)  # a Hub repo id, not a workspace path
    )
    assert job.base_model == "lorapod-test/tiny-sd15"
    final = await service.wait(job.id, timeout=120)
    assert final.status == JobStatus.completed, final.error
    assert [a["name"] for a in final.artifacts if a["kind"] == "image"] == ["0.png"]
