"""Image generation end to end on the CPU: the warm worker with a tiny random SD 1.5 pipeline and tiny LoRAs,
plus the checks that turn a caller's parameters into a request."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image
from safetensors.numpy import save_file as save_numpy_safetensors

from core.contract.validation import parse
from core.errors import InvalidInput
from core.jobs.generation import GenerateParams, build_generation_request
from core.storage.workspace import Workspace
from core.training.base_models import FAMILIES
from gpu.generation import GenerationOutcome, GenerationRequest, WarmGenerator
from gpu.progress import Progress
from tests.fakes.tiny_sd import build_tiny_lora, build_tiny_sd15

REPO_ROOT = Path(__file__).resolve().parents[2]
# Must never show up in an image sidecar or a log, though the worker gets it in its environment.
SENTINEL_TOKEN = "hf_lorapod_test_sentinel_token"
# One torch thread: the test machine has two cores, and more threads only contend there.
WORKER_ENV = {"HF_HUB_OFFLINE": "1", "HF_TOKEN": SENTINEL_TOKEN, "OMP_NUM_THREADS": "1"}
on_module_loop = pytest.mark.asyncio(loop_scope="module")
_ids = itertools.count()


# -- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A workspace with the tiny pipeline (twice, as two base models) and two LoRAs from 'trainings'."""
    ws = Workspace(tmp_path_factory.mktemp("generation") / "workspace").ensure()
    model = build_tiny_sd15(ws.models / "tiny-sd15")
    build_tiny_sd15(ws.models / "tiny-sd15-copy")
    build_tiny_lora(model, ws.output / "train_aaaaaaaaaaaa" / "lora_a.safetensors", seed=1)
    build_tiny_lora(model, ws.output / "train_bbbbbbbbbbbb" / "lora_b.safetensors", seed=2)
    return ws


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def generator(workspace: Workspace) -> AsyncIterator[WarmGenerator]:
    """One warm generator shared by the module's tests, as a GPU slot would keep it."""
    gen = make_generator(workspace, idle_seconds=600.0)
    try:
        yield gen
    finally:
        await gen.shutdown()


def make_generator(workspace: Workspace, *, idle_seconds: float) -> WarmGenerator:
    """A generator on this interpreter (it has diffusers), one log per job."""
    return WarmGenerator(
        python=sys.executable,
        gpu=None,
        log_path_for=lambda job_id: workspace.logs / f"{job_id}.log",
        extra_env=WORKER_ENV,
        idle_seconds=idle_seconds,
        cwd=REPO_ROOT,
    )


def make_request(workspace: Workspace, **overrides: Any) -> GenerationRequest:
    """A small, fast request on the tiny model; overrides change any field."""
    job_id = overrides.pop("job_id", f"gen_test{next(_ids):04d}")
    fields: dict[str, Any] = {
        "job_id": job_id,
        "base_model": str(workspace.models / "tiny-sd15"),
        "pipeline": "sd15",
        "lora_path": None,
        "lora_scale": 1.0,
        "prompts": ["a red cube on a table"],
        "negative_prompt": None,
        # Small enough to be quick on a CPU: a 16x16 latent, and guidance 1 skips the unconditional pass.
        "width": 32,
        "height": 32,
        "steps": 2,
        "guidance_scale": 1.0,
        "seed": 11,
        "num_images": 1,
        "output_dir": workspace.generated / job_id,
        "output_format": "png",
    }
    fields.update(overrides)
    return GenerationRequest(**fields)


def pixels(path: Path) -> np.ndarray:
    """An image's pixels as signed integers, so differences do not wrap."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(np.int32)


def lora(workspace: Workspace, name: str) -> Path:
    """One of the fixture LoRAs."""
    return next(workspace.output.rglob(name))


async def run_ok(gen: WarmGenerator, request: GenerationRequest, **callbacks: Any) -> GenerationOutcome:
    """Generate and insist it completed."""
    outcome = await gen.generate(request, **callbacks)
    assert outcome.status == "completed", outcome.error
    return outcome


# -- the warm worker ------------------------------------------------------------------------------------


@on_module_loop
async def test_generate_writes_images_of_the_requested_size_with_sidecars(
    generator: WarmGenerator, workspace: Workspace
) -> None:
    progress: list[Progress] = []
    seen: list[Path] = []
    request = make_request(
        workspace,
        prompts=["a red cube", "a blue ball"],
        num_images=2,
        width=48,
        height=32,
        seed=7,
        guidance_scale=5.0,
        negative_prompt="blurry",
    )
    outcome = await run_ok(generator, request, on_progress=progress.append, on_image=seen.append)

    assert outcome.images == [request.output_dir / f"{i}.png" for i in range(4)]
    assert seen == outcome.images
    for index, path in enumerate(outcome.images):
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert image.size == (48, 32)
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["seed"] == 7 + index
        assert sidecar["prompt"] == request.prompts[index // 2]
        assert sidecar["negative_prompt"] == "blurry"
        assert (sidecar["width"], sidecar["height"], sidecar["steps"]) == (48, 32, 2)
        assert sidecar["base_model"] == request.base_model
        assert sidecar["pipeline"] == "StableDiffusionPipeline"
        assert sidecar["lora"] is None
        assert sidecar["generator"] == "lorapod-generate/1"
    assert not [p.name for p in request.output_dir.iterdir() if p.name.startswith(".")]  # no temp files left
    steps = [p.step for p in progress]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)
    assert progress[-1].step == progress[-1].total == 4 * 2
    assert generator.loaded_model == request.base_model


@on_module_loop
async def test_jpg_and_webp_outputs(generator: WarmGenerator, workspace: Workspace) -> None:
    for fmt, pil_name in (("jpg", "JPEG"), ("webp", "WEBP")):
        outcome = await run_ok(generator, make_request(workspace, output_format=fmt))
        assert outcome.images[0].suffix == f".{fmt}"
        with Image.open(outcome.images[0]) as image:
            assert image.format == pil_name


@on_module_loop
async def test_same_seed_gives_same_pixels(generator: WarmGenerator, workspace: Workspace) -> None:
    first = await run_ok(generator, make_request(workspace, seed=1234))
    again = await run_ok(generator, make_request(workspace, seed=1234))
    other = await run_ok(generator, make_request(workspace, seed=4321))

    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    assert not np.array_equal(pixels(first.images[0]), pixels(other.images[0]))


@on_module_loop
async def test_no_seed_picks_one_and_records_it(generator: WarmGenerator, workspace: Workspace) -> None:
    outcome = await run_ok(generator, make_request(workspace, seed=None, num_images=2))
    seeds = [json.loads(p.with_suffix(".json").read_text())["seed"] for p in outcome.images]
    assert isinstance(seeds[0], int)
    assert seeds[1] == seeds[0] + 1
    # The recorded seed reproduces the image.
    replay = await run_ok(generator, make_request(workspace, seed=seeds[1]))
    assert np.array_equal(pixels(outcome.images[1]), pixels(replay.images[0]))


@on_module_loop
async def test_lora_changes_the_output_and_swapping_it_keeps_the_base_loaded(
    generator: WarmGenerator, workspace: Workspace
) -> None:
    base = await run_ok(generator, make_request(workspace))
    with_a = await run_ok(generator, make_request(workspace, lora_path=lora(workspace, "lora_a.safetensors")))
    with_b = await run_ok(generator, make_request(workspace, lora_path=lora(workspace, "lora_b.safetensors")))
    a_at_zero = await run_ok(
        generator, make_request(workspace, lora_path=lora(workspace, "lora_a.safetensors"), lora_scale=0.0)
    )
    without = await run_ok(generator, make_request(workspace))

    reference = pixels(base.images[0])
    assert np.abs(pixels(with_a.images[0]) - reference).max() > 0
    assert np.abs(pixels(with_b.images[0]) - pixels(with_a.images[0])).max() > 0
    assert np.array_equal(pixels(a_at_zero.images[0]), reference)  # the scale is applied
    assert np.array_equal(pixels(without.images[0]), reference)  # and the LoRA really unloaded
    assert base.loads >= 1
    assert with_a.loads == with_b.loads == a_at_zero.loads == without.loads == base.loads
    sidecar = json.loads(with_b.images[0].with_suffix(".json").read_text())
    assert (sidecar["lora"], sidecar["lora_scale"]) == ("lora_b.safetensors", 1.0)


@on_module_loop
async def test_another_base_model_is_loaded_and_replaces_the_first(
    generator: WarmGenerator, workspace: Workspace
) -> None:
    before = await run_ok(generator, make_request(workspace))
    other = await run_ok(generator, make_request(workspace, base_model=str(workspace.models / "tiny-sd15-copy")))
    back = await run_ok(generator, make_request(workspace))

    assert other.loads == before.loads + 1
    assert back.loads == before.loads + 2  # only the last base model is kept
    assert generator.loaded_model == str(workspace.models / "tiny-sd15")


@on_module_loop
async def test_cancel_stops_early_and_the_worker_stays_warm(generator: WarmGenerator, workspace: Workspace) -> None:
    warm = await run_ok(generator, make_request(workspace))
    progress: list[Progress] = []

    def cancel_on_first_step(state: Progress) -> None:
        progress.append(state)
        if len(progress) == 1:
            generator.cancel()

    request = make_request(workspace, steps=150, num_images=2)
    started = time.monotonic()
    outcome = await generator.generate(request, on_progress=cancel_on_first_step)

    assert outcome.status == "cancelled"
    assert len(outcome.images) < 2
    assert progress[-1].step < progress[-1].total == 300
    assert time.monotonic() - started < 30
    assert generator.running
    after = await run_ok(generator, make_request(workspace))
    assert after.loads == warm.loads  # still warm: no reload
    # A cancel with nothing running is not held against the next request.
    generator.cancel()
    await run_ok(generator, make_request(workspace))


@on_module_loop
async def test_cancel_from_another_thread(generator: WarmGenerator, workspace: Workspace) -> None:
    threads: list[threading.Thread] = []

    def cancel_from_a_thread(_state: Progress) -> None:
        if not threads:
            threads.append(threading.Thread(target=generator.cancel))
            threads[0].start()

    outcome = await generator.generate(make_request(workspace, steps=150), on_progress=cancel_from_a_thread)
    threads[0].join()
    assert outcome.status == "cancelled"
    assert outcome.images == []


@on_module_loop
async def test_a_request_error_is_reported_and_the_worker_carries_on(
    generator: WarmGenerator, workspace: Workspace
) -> None:
    warm = await run_ok(generator, make_request(workspace))
    pid = generator.pid
    outcome = await generator.generate(make_request(workspace, lora_path=workspace.output / "missing.safetensors"))

    assert outcome.status == "failed"
    assert outcome.error is not None and "missing.safetensors" in outcome.error
    assert generator.pid == pid
    after = await run_ok(generator, make_request(workspace))
    assert after.loads == warm.loads


@on_module_loop
async def test_a_killed_worker_fails_its_request_and_the_next_starts_fresh(
    generator: WarmGenerator, workspace: Workspace
) -> None:
    await run_ok(generator, make_request(workspace))
    victim = generator.pid
    assert victim is not None

    def kill_on_first_step(_state: Progress) -> None:
        if generator.pid == victim:
            os.kill(victim, signal.SIGKILL)

    request = make_request(workspace, steps=150)
    outcome = await generator.generate(request, on_progress=kill_on_first_step)

    assert outcome.status == "failed"
    assert outcome.error is not None and "died" in outcome.error and "SIGKILL" in outcome.error
    assert "SIGKILL" in (workspace.logs / f"{request.job_id}.log").read_text()
    assert not generator.running
    after = await run_ok(generator, make_request(workspace))
    assert generator.pid not in (None, victim)
    assert after.loads == 1  # a new worker, which loaded the base model once


@on_module_loop
async def test_a_missing_interpreter_fails_the_request_cleanly(workspace: Workspace) -> None:
    gen = WarmGenerator(python="/nonexistent/python3", gpu=None, log_path_for=workspace.logs / "broken.log")
    outcome = await gen.generate(make_request(workspace))
    assert outcome.status == "failed"
    assert outcome.error is not None and "could not start the generation worker" in outcome.error
    assert not gen.running


@on_module_loop
async def test_a_worker_that_dies_at_start_says_why(workspace: Workspace, tmp_path: Path) -> None:
    fake = tmp_path / "fake_site" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('this torch is broken on purpose')\n")
    gen = WarmGenerator(
        python=sys.executable,
        gpu=None,
        log_path_for=lambda job_id: workspace.logs / f"{job_id}.log",
        extra_env={**WORKER_ENV, "PYTHONPATH": str(fake.parent)},
    )
    try:
        outcome = await gen.generate(make_request(workspace))
    finally:
        await gen.shutdown()
    assert outcome.status == "failed"
    assert outcome.error is not None
    assert "died (exited with status 1)" in outcome.error
    assert "this torch is broken on purpose" in outcome.error


@on_module_loop
async def test_no_token_in_sidecars_or_logs(generator: WarmGenerator, workspace: Workspace) -> None:
    await run_ok(generator, make_request(workspace))
    for path in [*workspace.generated.rglob("*.json"), *workspace.logs.glob("*.log")]:
        assert SENTINEL_TOKEN not in path.read_text(errors="replace"), path


@on_module_loop
async def test_cancel_while_the_worker_starts(generator: WarmGenerator, workspace: Workspace) -> None:
    await generator.shutdown()
    assert not generator.running
    # Starting a worker (importing torch and diffusers) takes seconds; the cancel lands meanwhile.
    asyncio.get_running_loop().call_later(0.2, generator.cancel)
    outcome = await generator.generate(make_request(workspace))

    assert (outcome.status, outcome.images) == ("cancelled", [])
    assert generator.running  # started, and kept for the next request
    after = await run_ok(generator, make_request(workspace))
    assert after.loads == 1


@on_module_loop
async def test_an_idle_worker_shuts_down(generator: WarmGenerator, workspace: Workspace) -> None:
    # Last of the worker tests, so the shared worker is not restarted for the tests after it.
    generator.idle_seconds = 0.3
    try:
        await run_ok(generator, make_request(workspace))
        assert generator.running
        deadline = time.monotonic() + 15
        while generator.running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not generator.running
        assert generator.loaded_model is None and generator.pid is None
    finally:
        generator.idle_seconds = 600.0


def test_worker_keeps_library_output_off_the_protocol_stream() -> None:
    code = (
        "import os; from gpu.generate_worker import Protocol, take_stdout; p = Protocol(take_stdout()); "
        "print('library noise'); os.write(1, b'native noise\\n'); p.emit('ready', pid=1)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30, check=True
    )
    assert [json.loads(line) for line in result.stdout.splitlines()] == [{"event": "ready", "pid": 1}]
    assert "library noise" in result.stderr and "native noise" in result.stderr


# -- parameters into a request ----------------------------------------------------------------------------


@pytest.fixture
def params_ws(tmp_path: Path) -> Workspace:
    """A workspace with a (weightless) local SD 1.5 folder and LoRA files; enough for resolution checks."""
    ws = Workspace(tmp_path / "workspace").ensure()
    (ws.models / "tiny").mkdir()
    (ws.models / "tiny" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    (ws.models / "not-diffusers").mkdir()
    write_lora(ws.output / "train_aaaaaaaaaaaa" / "lora_a.safetensors", "sd_1.5")
    write_lora(ws.output / "train_ffffffffffff" / "flux_style.safetensors", "flux.1")
    write_lora(ws.output / "one" / "twice.safetensors", "sd_1.5")
    write_lora(ws.output / "two" / "twice.safetensors", "sd_1.5")
    (ws.output / "notes.txt").write_text("not a LoRA")
    (ws.output / "broken.safetensors").write_bytes(b"\xff" * 64)
    return ws


def write_lora(path: Path, base_version: str) -> Path:
    """A minimal safetensors file carrying ai-toolkit's base-model metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_numpy_safetensors(
        {"w": np.zeros(2, dtype=np.float32)}, str(path), metadata={"ss_base_model_version": base_version}
    )
    return path


def build(
    ws: Workspace, payload: dict[str, Any], lora_for_job: Callable[[str], Path | None] = lambda _id: None
) -> GenerationRequest:
    """A caller's payload the way a request takes it: validated, then resolved."""
    return build_generation_request(
        parse(GenerateParams, payload), workspace=ws, job_id="gen_000000000001", lora_for_job=lora_for_job
    )


def test_local_base_model_and_family_defaults(params_ws: Workspace) -> None:
    request = build(params_ws, {"prompt": "a cat", "base_model": "models/tiny", "seed": 5})
    family = FAMILIES["sd15"]
    assert request.base_model == str(params_ws.models / "tiny")
    assert request.pipeline == family.pipeline
    assert (request.width, request.height) == (family.sample_size, family.sample_size)
    assert request.steps == family.sample_steps
    assert request.guidance_scale == family.guidance_scale
    assert request.prompts == ["a cat"] and request.seed == 5
    assert request.output_dir == params_ws.generated / "gen_000000000001"


def test_alias_and_repo_ids_pass_through(params_ws: Workspace) -> None:
    by_alias = build(params_ws, {"prompts": ["a", "b"], "base_model": "sdxl", "width": 768, "steps": 12})
    assert (by_alias.base_model, by_alias.pipeline) == (FAMILIES["sdxl"].repo, "sdxl")
    assert (by_alias.width, by_alias.height, by_alias.steps) == (768, FAMILIES["sdxl"].sample_size, 12)
    assert by_alias.prompts == ["a", "b"]
    by_repo = build(params_ws, {"prompt": "a", "base_model": "someone/custom-sdxl", "model_family": "sdxl"})
    assert (by_repo.base_model, by_repo.pipeline) == ("someone/custom-sdxl", "sdxl")


def test_lora_by_name_by_training_id_and_by_path(params_ws: Workspace) -> None:
    expected = params_ws.output / "train_aaaaaaaaaaaa" / "lora_a.safetensors"
    for value in ("lora_a", "lora_a.safetensors", "output/train_aaaaaaaaaaaa/lora_a.safetensors", str(expected)):
        assert build(params_ws, {"prompt": "a", "base_model": "sd15", "lora": value}).lora_path == expected

    asked: list[str] = []

    def final_lora(job_id: str) -> Path | None:
        asked.append(job_id)
        return expected if job_id == "train_aaaaaaaaaaaa" else None

    request = build(params_ws, {"prompt": "a", "base_model": "sd15", "lora": "train_aaaaaaaaaaaa"}, final_lora)
    assert request.lora_path == expected and asked == ["train_aaaaaaaaaaaa"]


def test_base_model_defaults_to_the_family_the_lora_was_trained_for(params_ws: Workspace) -> None:
    flux = build(params_ws, {"prompt": "a", "lora": "flux_style"})
    assert (flux.base_model, flux.pipeline) == (FAMILIES["flux-dev"].repo, "flux")
    sd = build(params_ws, {"prompt": "a", "lora": "lora_a"})
    assert (sd.base_model, sd.pipeline) == (FAMILIES["sd15"].repo, "sd15")


@pytest.mark.parametrize(
    ("payload", "field", "reason"),
    [
        ({}, "prompts", "prompt is required"),
        ({"prompt": "   "}, "prompts", "prompt is required"),
        ({"prompt": "a", "prompts": ["b"]}, "prompts", "not both"),
        ({"prompts": ["a"] * 17}, "prompts", "at most 16"),
        ({"prompt": "a", "width": 100}, "width", "multiple of 8"),
        ({"prompt": "a", "height": 4096}, "height", "less than or equal to 2048"),
        ({"prompt": "a", "num_images": 9}, "num_images", "less than or equal to 8"),
        ({"prompt": "a", "steps": 0}, "steps", "greater than or equal to 1"),
        ({"prompt": "a", "seed": -1}, "seed", "greater than or equal to 0"),
        ({"prompt": "a", "lora_scale": 3}, "lora_scale", "less than or equal to 2"),
        ({"prompt": "a", "sampler": "euler"}, "sampler", "not a known field"),
        ({"prompt": "a", "base_model": "sd15", "lora": "nope"}, "lora", "no LoRA named 'nope.safetensors'"),
        ({"prompt": "a", "base_model": "sd15", "lora": "twice"}, "lora", "matches 2 files"),
        ({"prompt": "a", "base_model": "sd15", "lora": "train_0123456789ab"}, "lora", "has no final LoRA"),
        ({"prompt": "a", "base_model": "sd15", "lora": "../../etc/passwd.safetensors"}, "lora", "outside"),
        ({"prompt": "a", "base_model": "sd15", "lora": "output/notes.txt"}, "lora", ".safetensors file"),
        ({"prompt": "a", "base_model": "sd15", "lora": "output/gone.safetensors"}, "lora", "does not exist"),
        ({"prompt": "a", "base_model": "sd15", "lora": "broken"}, "lora", "not a readable safetensors"),
        ({"prompt": "a", "base_model": "sd15", "lora": "flux_style"}, "lora", "trained for FLUX.1-dev"),
        ({"prompt": "a", "base_model": "models/../../etc"}, "base_model", "outside the workspace"),
        ({"prompt": "a", "base_model": "/etc"}, "base_model", "outside the workspace"),
        ({"prompt": "a", "base_model": "./output"}, "base_model", "under models/"),
        ({"prompt": "a", "base_model": "models/missing"}, "base_model", "does not exist"),
        ({"prompt": "a", "base_model": "models/not-diffusers", "model_family": "sd15"}, "base_model", "model_index"),
        ({"prompt": "a", "base_model": "not a repo"}, "base_model", "repo id"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    params_ws: Workspace, payload: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        build(params_ws, payload)
    assert caught.value.field == field
    assert reason in caught.value.message
    assert not params_ws.generated.joinpath("gen_000000000001").exists()  # nothing written for a refusal
