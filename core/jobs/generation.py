"""Generation input: the caller's parameters, checked, with the base model and LoRA resolved into a request."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from core.errors import InvalidInput
from core.jobs.rows import Job
from core.storage.safetensors import NotSafetensors, read_metadata
from core.storage.workspace import Workspace
from core.training.base_models import FAMILIES, family_for
from gpu.generation import GenerationRequest

MAX_PROMPTS = 16
MAX_PROMPT_CHARS = 4000
MAX_SIZE = 2048
MIN_SIZE = 64
MAX_STEPS = 150
MAX_IMAGES = 8
MAX_SEED = 2**32 - 1
DEFAULT_BASE_MODEL = "flux-dev"  # the training default, so a default-trained LoRA finds its base
# A training process id, as core.jobs.rows.new_job_id makes them.
_TRAINING_ID = re.compile(r"^train_[A-Za-z0-9]+$")
# ai-toolkit's `ss_base_model_version` metadata in its LoRA files, by the family to default to.
_LORA_BASES = {"sd_1.5": "sd15", "sdxl_1.0": "sdxl", "flux.1": "flux-dev"}


class GenerateParams(BaseModel):
    """What a caller asks to generate; sizes, steps and guidance default to the base model's family."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="One prompt (or give prompts).")
    prompts: list[str] | None = Field(
        None,
        validate_default=True,
        min_length=1,
        max_length=MAX_PROMPTS,
        description=f"Several prompts, at most {MAX_PROMPTS} (or give prompt).",
    )
    negative_prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="What to steer away from.")
    base_model: str | None = Field(
        None,
        min_length=1,
        max_length=300,
        description=(
            f"A family alias ({', '.join(FAMILIES)}), a Hugging Face repo id 'org/name' or a diffusers folder "
            "under models/ (e.g. 'models/my-model'). Default: the family the LoRA was trained for, else "
            f"{DEFAULT_BASE_MODEL}."
        ),
    )
    model_family: str | None = Field(
        None, description=f"Family of a base_model that is not a known repo: {', '.join(FAMILIES)}."
    )
    lora: str | None = Field(
        None,
        min_length=1,
        max_length=500,
        description="A LoRA: its file name under output/, a training process id (its final LoRA), or a path.",
    )
    lora_scale: float = Field(1.0, ge=0.0, le=2.0, description="Strength of the LoRA.")
    width: int | None = Field(None, ge=MIN_SIZE, le=MAX_SIZE, description="Image width, a multiple of 8.")
    height: int | None = Field(None, ge=MIN_SIZE, le=MAX_SIZE, description="Image height, a multiple of 8.")
    steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="Denoising steps.")
    guidance_scale: float | None = Field(None, ge=0.0, le=30.0, description="Classifier-free guidance.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Seed of the first image; image k uses seed+k.")
    num_images: int = Field(1, ge=1, le=MAX_IMAGES, description="Images per prompt.")
    output_format: Literal["png", "jpg", "webp"] = "png"

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain a NUL character")
        return value

    @field_validator("prompts")
    @classmethod
    def _one_source(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        # Runs even when prompts is absent (validate_default), so "neither" is caught here too.
        prompt = info.data.get("prompt")
        if value is not None and prompt is not None:
            raise ValueError("give either prompt or prompts, not both")
        if value is None and (prompt is None or not prompt.strip()):
            raise ValueError("a prompt is required (prompt, or prompts as a list)")
        for text in value or ():
            if not text.strip():
                raise ValueError("every prompt must have some text")
            if len(text) > MAX_PROMPT_CHARS or "\x00" in text:
                raise ValueError(f"every prompt must be at most {MAX_PROMPT_CHARS} characters, without NUL")
        return value

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_8(cls, value: int | None) -> int | None:
        if value is not None and value % 8:
            raise ValueError("must be a multiple of 8")
        return value

    @property
    def prompt_list(self) -> list[str]:
        """The prompts, whichever field carried them."""
        return list(self.prompts) if self.prompts is not None else [self.prompt or ""]


def build_generation_request(
    params: GenerateParams,
    *,
    workspace: Workspace,
    job_id: str,
    lora_for_job: Callable[[str], Path | None],
) -> GenerationRequest:
    """Resolve the base model and LoRA and fill family defaults; InvalidInput names the field at fault."""
    lora_path = resolve_lora(params.lora, workspace, lora_for_job) if params.lora else None
    lora_base = lora_base_family(lora_path) if lora_path else None
    # With no base_model: the family asked for, else the one the LoRA was trained for, else the training default.
    base_model = params.base_model or params.model_family or lora_base or DEFAULT_BASE_MODEL
    family, name_or_path = family_for(base_model, params.model_family, workspace)
    if lora_base is not None and FAMILIES[lora_base].pipeline != family.pipeline:
        raise InvalidInput(
            "lora",
            f"was trained for {FAMILIES[lora_base].label} but base_model is {family.label}: pick a matching base_model",
        )
    if name_or_path.startswith("/"):
        _check_local_folder(Path(name_or_path), workspace)
    return GenerationRequest(
        job_id=job_id,
        base_model=name_or_path,
        pipeline=family.pipeline,
        lora_path=lora_path,
        lora_scale=params.lora_scale,
        prompts=params.prompt_list,
        negative_prompt=params.negative_prompt or None,
        width=params.width or family.sample_size,
        height=params.height or family.sample_size,
        steps=params.steps or family.sample_steps,
        guidance_scale=params.guidance_scale if params.guidance_scale is not None else family.guidance_scale,
        seed=params.seed,
        num_images=params.num_images,
        output_dir=workspace.child(workspace.generated, job_id, field="job_id"),
        output_format=params.output_format,
    )


def _check_local_folder(path: Path, workspace: Workspace) -> None:
    """The generator loads diffusers folders only (not single-file checkpoints)."""
    if not (path / "model_index.json").is_file():
        raise InvalidInput(
            "base_model",
            f"'{workspace.relative(path)}' is not a diffusers model folder (it has no model_index.json)",
        )


def resolve_lora(value: str, workspace: Workspace, lora_for_job: Callable[[str], Path | None]) -> Path:
    """A LoRA file from a training process id, a file name under output/, or a workspace path."""
    text = value.strip()
    if _TRAINING_ID.match(text):
        found = lora_for_job(text)
        if found is not None:
            return _check_lora_file(Path(found), workspace)
        named = _find_in_output(text + ".safetensors", workspace)
        if named is None:
            raise InvalidInput("lora", f"training '{text}' has no final LoRA (unknown id, or not finished)")
        return _check_lora_file(named, workspace)
    if "/" in text:
        return _check_lora_file(workspace.resolve(text, field="lora"), workspace)
    name = text if text.endswith(".safetensors") else text + ".safetensors"
    named = _find_in_output(name, workspace)
    if named is None:
        raise InvalidInput("lora", f"no LoRA named '{name}' in output/")
    return _check_lora_file(named, workspace)


def _find_in_output(name: str, workspace: Workspace) -> Path | None:
    """The one file called name under output/ (generated images aside); InvalidInput when several are."""
    if "\\" in name or "\x00" in name or name.startswith("."):
        raise InvalidInput("lora", "must be a file name, a training process id or a workspace path")
    matches = sorted(
        path for path in workspace.output.rglob(name) if path.is_file() and not path.is_relative_to(workspace.generated)
    )
    if len(matches) > 1:
        listed = ", ".join(workspace.relative(p) for p in matches[:5])
        raise InvalidInput("lora", f"'{name}' matches {len(matches)} files ({listed}): give its path instead")
    return matches[0] if matches else None


def _check_lora_file(path: Path, workspace: Workspace) -> Path:
    """An existing .safetensors file inside the workspace (symlinks followed)."""
    resolved = workspace.resolve(path, field="lora")
    if resolved.suffix != ".safetensors":
        raise InvalidInput("lora", "must be a .safetensors file")
    if not resolved.is_file():
        raise InvalidInput("lora", f"the file '{workspace.relative(resolved)}' does not exist")
    safetensors_metadata(resolved)  # refuses files that are not safetensors at all
    return resolved


def safetensors_metadata(path: Path) -> dict[str, str]:
    """The string metadata in a LoRA's safetensors header; InvalidInput on 'lora' when it is not one."""
    try:
        return read_metadata(path)
    except NotSafetensors as exc:
        raise InvalidInput("lora", f"'{path.name}' is not a readable safetensors file") from exc


def lora_base_family(path: Path) -> str | None:
    """The family key a LoRA was trained for, from ai-toolkit's ss_base_model_version metadata, if it says."""
    return _LORA_BASES.get(safetensors_metadata(path).get("ss_base_model_version", ""))


def generation_config(request: GenerationRequest, workspace: Workspace) -> dict[str, Any]:
    """The stored form of a generation request (paths relative to the workspace)."""
    config = asdict(request)
    del config["job_id"]
    config["lora_path"] = workspace.relative(request.lora_path) if request.lora_path else None
    config["output_dir"] = workspace.relative(request.output_dir)
    return config


def generation_request(job: Job, workspace: Workspace) -> GenerationRequest:
    """Rebuild the generation request stored on a job."""
    cfg = dict(job.config)
    lora = cfg.pop("lora_path")
    output_dir = cfg.pop("output_dir")
    return GenerationRequest(
        job_id=job.id,
        lora_path=(workspace.root / lora) if lora else None,
        output_dir=workspace.root / output_dir,
        **cfg,
    )
