"""The base-model families lorapod knows: their ai-toolkit model keys and training/sampling defaults."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from core.errors import InvalidInput
from core.storage.workspace import Workspace

# A Hugging Face repo id: "org/name", one slash, the characters the Hub allows.
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True, eq=False)
class Family:
    """One base-model family and how ai-toolkit trains and samples it."""

    key: str
    label: str
    repo: str
    pipeline: str  # "flux" | "sdxl" | "sd15": which diffusers pipeline generation code should use
    # `arch` for current ai-toolkit, plus the legacy boolean so checkouts from before `arch` read it too
    model_keys: MappingProxyType[str, Any]
    quantize: bool
    noise_scheduler: str
    sampler: str
    sample_size: int
    guidance_scale: float
    sample_steps: int
    resolutions: tuple[int, ...]
    timestep_type: str = "sigmoid"
    gated: bool = False  # the Hub repo needs an accepted licence, so HF_TOKEN must be set
    assistant_lora_path: str | None = None
    # diffusers pipeline class names (model_index.json `_class_name`) that identify a local copy
    pipeline_classes: tuple[str, ...] = ()
    other_repos: tuple[str, ...] = field(default_factory=tuple)

    def model_config(self, name_or_path: str, *, quantize: bool, low_vram: bool) -> dict[str, Any]:
        """The `model:` section of an ai-toolkit config for this family, every key explicit."""
        section: dict[str, Any] = {"name_or_path": name_or_path, **self.model_keys}
        section.update(
            {
                "quantize": quantize,
                "quantize_te": quantize,
                "qtype": "qfloat8",
                "qtype_te": "qfloat8",
                "low_vram": low_vram,
            }
        )
        if self.assistant_lora_path:
            section["assistant_lora_path"] = self.assistant_lora_path
        return section


def _keys(**keys: Any) -> MappingProxyType[str, Any]:
    return MappingProxyType(dict(keys))


_FLUX_COMMON: dict[str, Any] = {
    "pipeline": "flux",
    "model_keys": _keys(arch="flux", is_flux=True),
    "quantize": True,
    "noise_scheduler": "flowmatch",
    "sampler": "flowmatch",
    "sample_size": 1024,
    "resolutions": (512, 768, 1024),
    "pipeline_classes": ("FluxPipeline",),
}

FAMILIES: dict[str, Family] = {
    family.key: family
    for family in (
        Family(
            key="flux-dev",
            label="FLUX.1-dev",
            repo="black-forest-labs/FLUX.1-dev",
            guidance_scale=4.0,
            sample_steps=20,
            gated=True,
            **_FLUX_COMMON,
        ),
        Family(
            key="flux-schnell",
            label="FLUX.1-schnell",
            repo="black-forest-labs/FLUX.1-schnell",
            guidance_scale=1.0,
            sample_steps=4,
            # schnell is step-distilled; training it without this adapter breaks the distillation
            assistant_lora_path="ostris/FLUX.1-schnell-training-adapter",
            **_FLUX_COMMON,
        ),
        Family(
            key="sdxl",
            label="SDXL 1.0",
            repo="stabilityai/stable-diffusion-xl-base-1.0",
            pipeline="sdxl",
            model_keys=_keys(arch="sdxl", is_xl=True),
            quantize=False,
            noise_scheduler="ddpm",
            sampler="ddpm",
            sample_size=1024,
            guidance_scale=6.0,
            sample_steps=30,
            resolutions=(768, 1024),
            pipeline_classes=("StableDiffusionXLPipeline",),
        ),
        Family(
            key="sd15",
            label="Stable Diffusion 1.5",
            repo="stable-diffusion-v1-5/stable-diffusion-v1-5",
            pipeline="sd15",
            # 'sd1' is ai-toolkit's own arch name for SD 1.x (its default when nothing is set)
            model_keys=_keys(arch="sd1"),
            quantize=False,
            noise_scheduler="ddpm",
            sampler="ddpm",
            sample_size=512,
            guidance_scale=6.0,
            sample_steps=30,
            resolutions=(512,),
            pipeline_classes=("StableDiffusionPipeline",),
            other_repos=("runwayml/stable-diffusion-v1-5",),
        ),
    )
}

# Known Hub repos (lower-cased, as the Hub treats ids case-insensitively) to their family.
KNOWN_REPOS: dict[str, Family] = {
    repo.lower(): family for family in FAMILIES.values() for repo in (family.repo, *family.other_repos)
}


def family_names() -> str:
    """The family keys as a readable list, for error messages."""
    return ", ".join(FAMILIES)


def get_family(key: str, *, field: str = "model_family") -> Family:
    """A family by its key, or InvalidInput naming the field."""
    family = FAMILIES.get(key)
    if family is None:
        raise InvalidInput(field, f"unknown model family '{key}': use one of {family_names()}")
    return family


def family_for(base_model: str, model_family: str | None, workspace: Workspace) -> tuple[Family, str]:
    """The family and the model.name_or_path for a base model given as alias, repo id or path under models/."""
    chosen = get_family(model_family) if model_family is not None else None
    text = base_model.strip()
    if not text:
        raise InvalidInput("base_model", "must not be empty")

    if text in FAMILIES:
        family = FAMILIES[text]
        _check_same(chosen, family, f"base_model '{text}'")
        return family, family.repo

    if _is_local(text):
        path = _local_model(text, workspace)
        guessed = _guess_local(path)
        if chosen is None and guessed is None:
            raise InvalidInput(
                "model_family",
                f"is needed for the local model '{text}' (its family could not be guessed): "
                f"use one of {family_names()}",
            )
        if chosen is not None:
            return chosen, str(path)
        assert guessed is not None
        return guessed, str(path)

    if not _REPO_ID.match(text):
        raise InvalidInput(
            "base_model",
            f"must be a family alias ({family_names()}), a Hugging Face repo id 'org/name' or a path under models/",
        )
    known = KNOWN_REPOS.get(text.lower())
    if known is not None:
        _check_same(chosen, known, f"the repo '{text}'")
        return known, text
    if chosen is None:
        raise InvalidInput(
            "model_family",
            f"is needed for the unknown repo '{text}': use one of {family_names()}",
        )
    return chosen, text


def _check_same(chosen: Family | None, actual: Family, what: str) -> None:
    if chosen is not None and chosen is not actual:
        raise InvalidInput("model_family", f"'{chosen.key}' does not match {what}, which is {actual.key}")


def _is_local(text: str) -> bool:
    # "models/x" also looks like a repo id; the workspace's folder name decides it is a path
    return text.startswith(("/", "./", "models/")) or text == "models"


def _local_model(text: str, workspace: Workspace) -> Path:
    path = workspace.resolve(text, field="base_model")
    if path == workspace.models or not path.is_relative_to(workspace.models):
        raise InvalidInput("base_model", "a local model must be a folder or file under models/")
    if not path.exists():
        raise InvalidInput("base_model", f"the local model '{workspace.relative(path)}' does not exist")
    return path


def _guess_local(path: Path) -> Family | None:
    """The family of a local diffusers folder from its model_index.json, when it says."""
    index = path / "model_index.json"
    if not index.is_file():
        return None
    try:
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    if class_name == "FluxPipeline":
        return _guess_flux(path)
    matches = [family for family in FAMILIES.values() if class_name in family.pipeline_classes]
    return matches[0] if len(matches) == 1 else None


def _guess_flux(path: Path) -> Family | None:
    """FLUX dev and schnell share a pipeline class; only dev's transformer embeds guidance."""
    try:
        config = json.loads((path / "transformer" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    embeds = config.get("guidance_embeds") if isinstance(config, dict) else None
    if embeds is None:
        return None
    return FAMILIES["flux-dev"] if embeds else FAMILIES["flux-schnell"]
