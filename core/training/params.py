"""Simple training parameters as callers send them, checked field by field."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from core.storage.names import NAME_RULE, is_valid_name

# Optimizers ai-toolkit's toolkit/optimizer.py builds (lower-case names).
OPTIMIZERS = (
    "adamw8bit",
    "adam8bit",
    "adamw",
    "adam",
    "lion",
    "lion8bit",
    "ademamix8bit",
    "prodigy",
    "prodigy8bit",
    "adafactor",
    "adagrad",
    "automagic",
)


MAX_STEPS = 100_000


MIN_RESOLUTION, MAX_RESOLUTION, RESOLUTION_STEP = 256, 2048, 64


def _no_env_reference(value: str) -> str:
    # ai-toolkit substitutes ${VAR} from its environment when it reads the file: HF_TOKEN would leak
    if "${" in value:
        raise ValueError("must not contain '${' (ai-toolkit would substitute environment variables there)")
    return value


class TrainParams(BaseModel):
    """Simple training parameters, with Replicate-like defaults; lorapod writes the ai-toolkit config."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    training_name: str = Field(
        ..., min_length=1, max_length=128, description="The dataset: a folder under training_data/."
    )
    name: str | None = Field(None, description="The LoRA's name (file prefix); default the training_name.")
    trigger_word: str | None = Field(
        None, min_length=1, max_length=100, description="Word that calls up the concept; prepended to captions."
    )
    base_model: str = Field(
        "flux-dev",
        min_length=1,
        max_length=300,
        description="Family alias (flux-dev, flux-schnell, sdxl, sd15), Hugging Face repo id, or a path under models/.",
    )
    model_family: str | None = Field(
        None, description="Family of a base_model that is not a known repo: flux-dev, flux-schnell, sdxl, sd15."
    )
    steps: int = Field(1000, ge=1, le=MAX_STEPS, description="Training steps.")
    rank: int = Field(
        16, ge=1, le=256, validation_alias=AliasChoices("rank", "lora_rank"), description="LoRA rank (linear)."
    )
    alpha: int | None = Field(None, ge=1, le=256, description="LoRA alpha; default equal to rank.")
    learning_rate: float = Field(4e-4, gt=0, lt=1, description="Learning rate.")
    resolution: list[int] | None = Field(
        None,
        description="Training resolutions (one, a list, or '512,768,1024'); multiples of 64 in 256..2048. "
        "Default per family.",
    )
    batch_size: int = Field(1, ge=1, le=64, description="Images per step.")
    gradient_accumulation: int = Field(1, ge=1, le=64, description="Steps whose gradients are summed per update.")
    caption_dropout_rate: float = Field(0.05, ge=0, le=1, description="Share of steps trained with an empty caption.")
    default_caption: str | None = Field(
        None, max_length=1000, description="Caption for images that have no .txt caption file."
    )
    num_repeats: int = Field(1, ge=1, le=100, description="Times each image is repeated per epoch.")
    flip_x: bool = Field(False, description="Also train on horizontally mirrored copies.")
    optimizer: str = Field("adamw8bit", description=f"One of {', '.join(OPTIMIZERS)}.")
    content_or_style: Literal["balanced", "content", "style"] = Field(
        "balanced", description="Bias timesteps towards content, style, or neither."
    )
    use_ema: bool = Field(True, description="Keep an exponential moving average of the weights (decay 0.99).")
    save_every: int = Field(250, ge=1, le=MAX_STEPS, description="Save a checkpoint every N steps.")
    max_step_saves_to_keep: int = Field(4, ge=1, le=100, description="Step checkpoints kept besides the final.")
    sample_prompts: list[str] = Field(
        default_factory=list, max_length=20, description="Prompts sampled during training; none disables sampling."
    )
    sample_every: int = Field(250, ge=1, le=MAX_STEPS, description="Sample every N steps.")
    skip_first_sample: bool = Field(True, description="Skip the baseline samples before the first step.")
    seed: int | None = Field(None, ge=0, le=2**32 - 1, description="Training and sampling seed.")
    quantize: bool | None = Field(None, description="Quantize the base model to 8 bit; default per family (FLUX on).")
    low_vram: bool = Field(False, description="Trade speed for memory while loading (FLUX on 24 GB cards).")
    gradient_checkpointing: bool = Field(True, description="Trade compute for memory.")
    cache_latents_to_disk: bool = Field(True, description="Cache VAE latents next to the dataset.")

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_name(value):
            raise ValueError(NAME_RULE)
        return value

    @field_validator("trigger_word")
    @classmethod
    def _check_trigger(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if not value or any(ch in value for ch in "\r\n\t"):
            raise ValueError("must be a non-empty word or phrase on one line")
        return _no_env_reference(value)

    @field_validator("training_name", "base_model", "model_family", "default_caption")
    @classmethod
    def _check_text(cls, value: str | None) -> str | None:
        return None if value is None else _no_env_reference(value)

    @field_validator("sample_prompts")
    @classmethod
    def _check_prompts(cls, value: list[str]) -> list[str]:
        for prompt in value:
            if not prompt.strip():
                raise ValueError("each prompt must be non-empty")
            if len(prompt) > 2000:
                raise ValueError("each prompt must be at most 2000 characters")
            _no_env_reference(prompt)
        return value

    @field_validator("resolution", mode="before")
    @classmethod
    def _split_resolution(cls, value: Any) -> Any:
        # Replicate's trainer takes "512,768,1024"; a single number means one resolution
        if isinstance(value, str):
            try:
                return [int(part) for part in value.split(",") if part.strip()]
            except ValueError:
                raise ValueError("must be a number or a comma-separated list of numbers, e.g. '512,768,1024'") from None
        if isinstance(value, int) and not isinstance(value, bool):
            return [value]
        return value

    @field_validator("resolution")
    @classmethod
    def _check_resolution(cls, value: list[int] | None) -> list[int] | None:
        if value is None:
            return None
        if not 1 <= len(value) <= 8:
            raise ValueError("must list 1 to 8 resolutions")
        for size in value:
            if not (MIN_RESOLUTION <= size <= MAX_RESOLUTION and size % RESOLUTION_STEP == 0):
                raise ValueError(
                    f"each resolution must be a multiple of {RESOLUTION_STEP} between {MIN_RESOLUTION} "
                    f"and {MAX_RESOLUTION} (got {size})"
                )
        return sorted(set(value))

    @field_validator("optimizer")
    @classmethod
    def _check_optimizer(cls, value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in OPTIMIZERS:
            raise ValueError(f"must be one of {', '.join(OPTIMIZERS)}")
        return lowered
