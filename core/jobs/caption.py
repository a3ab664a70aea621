"""Caption input: the caller's fields checked, the model resolved, and the stored config a caption run reads."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.errors import InvalidInput
from core.storage.captions import caption_file, dataset_images, remove_stale_temporaries
from core.storage.names import NAME_RULE, is_valid_name
from core.storage.workspace import Workspace
from gpu.caption_protocol import MAX_LENGTH_LIMIT, TRIGGER
from gpu.captioning import CaptioningRequest

# BLIP base: about 250 M parameters (about 0.5 GB in fp16 on a GPU, small enough for a CPU), loads with plain
# transformers (no remote code), and is what kohya's make_captions.py uses.
DEFAULT_CAPTION_MODEL = "Salesforce/blip-image-captioning-base"
MODEL_ALIASES = {
    "blip-base": DEFAULT_CAPTION_MODEL,
    "blip-large": "Salesforce/blip-image-captioning-large",
    "git-base": "microsoft/git-base-coco",
    "git-large": "microsoft/git-large-coco",
}
DEFAULT_MAX_LENGTH = 75
MAX_AFFIX_CHARS = 500
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class CaptionOptions(BaseModel):
    """How to caption: the model, text around each caption and its length (autocaption takes these)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        DEFAULT_CAPTION_MODEL,
        min_length=1,
        max_length=300,
        description=(
            f"A Hugging Face repo id ('org/name'), an alias ({', '.join(MODEL_ALIASES)}) or a transformers folder "
            f"under models/ (e.g. 'models/my-captioner'). Default {DEFAULT_CAPTION_MODEL}."
        ),
    )
    prefix: str = Field("", max_length=MAX_AFFIX_CHARS, description="Text put before each generated caption.")
    suffix: str = Field("", max_length=MAX_AFFIX_CHARS, description="Text put after each generated caption.")
    max_length: int = Field(
        DEFAULT_MAX_LENGTH, ge=5, le=MAX_LENGTH_LIMIT, description="Most tokens the model may write per caption."
    )

    @field_validator("prefix", "suffix")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if "\x00" in value or "\n" in value or "\r" in value:
            raise ValueError("must be one line of text")
        return value


class CaptionParams(CaptionOptions):
    """A caption job: caption a dataset's images (by default only those without a caption)."""

    training_name: str = Field(..., min_length=1, max_length=64, description="The dataset to caption.")
    overwrite: bool = Field(False, description="Caption every image, replacing captions already there.")
    trigger_word: str | None = Field(
        None,
        min_length=1,
        max_length=100,
        description=f"Put where a caption (with prefix and suffix) says {TRIGGER}, or prepended when none does.",
    )

    @field_validator("training_name")
    @classmethod
    def _dataset_name(cls, value: str) -> str:
        if not is_valid_name(value):
            raise ValueError(NAME_RULE)
        return value

    @field_validator("trigger_word")
    @classmethod
    def _trigger(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or any(ch in value for ch in "\r\n\t\x00"):
            raise ValueError("must be a non-empty word or phrase on one line")
        return value


def resolve_caption_model(value: str, workspace: Workspace, *, field: str = "model") -> str:
    """A repo id (aliases expanded) or an absolute local folder; InvalidInput naming field when unusable."""
    text = MODEL_ALIASES.get(value.strip(), value.strip())
    if text.startswith(("/", "./", "models/")) or text == "models":
        path = workspace.resolve(text, field=field)
        if path == workspace.models or not path.is_relative_to(workspace.models):
            raise InvalidInput(field, "a local model must be a folder under models/")
        if not (path / "config.json").is_file():
            raise InvalidInput(
                field, f"'{workspace.relative(path)}' is not a transformers model folder (no config.json)"
            )
        return str(path)
    if not _REPO_ID.match(text):
        raise InvalidInput(
            field,
            f"unknown model '{value[:100]}': use a Hugging Face repo id 'org/name', one of "
            f"{', '.join(MODEL_ALIASES)}, or a folder under models/",
        )
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes") and not _cached(text, workspace):
        raise InvalidInput(field, f"'{text}' is not in the Hugging Face cache and HF_HUB_OFFLINE is set")
    return text


def _cached(repo_id: str, workspace: Workspace) -> bool:
    """Whether a snapshot of repo_id sits in the Hugging Face cache the workers use."""
    folder = "models--" + repo_id.replace("/", "--")
    roots = [os.environ.get("HF_HUB_CACHE"), workspace.hf_cache]
    if os.environ.get("HF_HOME"):
        roots.append(os.path.join(os.environ["HF_HOME"], "hub"))
    return any(root and (Path(root) / folder / "snapshots").is_dir() for root in roots)


def check_dataset(workspace: Workspace, name: str, *, field: str = "training_name") -> Path:
    """An existing dataset folder holding at least one image; InvalidInput naming field otherwise."""
    folder = workspace.child(workspace.training_data, name, field=field)
    if not folder.is_dir():
        raise InvalidInput(field, f"dataset '{name}' does not exist under training_data/")
    if not dataset_images(folder):
        raise InvalidInput(field, f"dataset '{name}' holds no images: upload some first")
    return folder


def caption_config(
    options: CaptionOptions,
    datasets: list[Path],
    workspace: Workspace,
    *,
    overwrite: bool,
    trigger_word: str | None,
    model_field: str = "model",
) -> dict[str, Any]:
    """The stored form of a captioning run (dataset paths relative to the workspace, the model resolved)."""
    return {
        "datasets": [workspace.relative(folder) for folder in datasets],
        "model": resolve_caption_model(options.model, workspace, field=model_field),
        "prefix": options.prefix,
        "suffix": options.suffix,
        "trigger_word": trigger_word,
        "max_length": options.max_length,
        "overwrite": overwrite,
    }


def captioning_request(job_id: str, config: dict[str, Any], workspace: Workspace) -> CaptioningRequest:
    """The request for a stored captioning config, with the images that need a caption as the datasets are now."""
    images: list[Path] = []
    for rel in config["datasets"]:
        folder = workspace.root / rel
        if not folder.is_dir():
            continue
        remove_stale_temporaries(folder)
        images += [p for p in dataset_images(folder) if config["overwrite"] or not caption_file(p).is_file()]
    return CaptioningRequest(
        job_id=job_id,
        model=config["model"],
        prefix=config["prefix"],
        suffix=config["suffix"],
        trigger_word=config["trigger_word"],
        max_length=config["max_length"],
        overwrite=config["overwrite"],
        images=images,
    )
