"""A complete ai-toolkit config built from simple parameters: the plan a job runs, its folders and dataset."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import InvalidInput
from core.storage.media import IMAGE_SUFFIXES
from core.storage.workspace import Workspace
from core.training.base_models import family_for
from core.training.params import TrainParams
from core.training.yaml_loader import dump_yaml


@dataclass(frozen=True)
class TrainingPlan:
    """A complete ai-toolkit config plus what lorapod needs to run and follow it."""

    name: str  # config.name: the tqdm bar's desc and the checkpoint prefix (<name>.safetensors)
    config: dict[str, Any]  # {"job": "extension", "config": {...}, "meta": {...}}
    total_steps: int
    save_root: Path  # <training_folder>/<name>: checkpoints and samples land here
    base_model: str  # model.name_or_path
    datasets: list[Path]
    warnings: list[str]  # what lorapod changed on the caller's behalf

    def to_yaml(self) -> str:
        """The config as YAML, as written to disk for run.py."""
        return dump_yaml(self.config)


# -- simple parameters ---------------------------------------------------------------------------------------


def build_training_config(params: TrainParams, *, workspace: Workspace, job_id: str) -> TrainingPlan:
    """A complete ai-toolkit config, every key explicit, from simple parameters."""
    dataset = dataset_folder(workspace, params.training_name)
    family, name_or_path = family_for(params.base_model, params.model_family, workspace)
    name = params.name or _name_from(params.training_name)
    training_folder = job_folder(workspace, job_id)
    resolutions = params.resolution or list(family.resolutions)
    sampling = bool(params.sample_prompts)

    process: dict[str, Any] = {
        "type": "sd_trainer",  # the plain CLI trainer: never touches the UI's database
        "training_folder": str(training_folder),
        "device": "cuda",  # ignored by the trainer (the GPU comes from CUDA_VISIBLE_DEVICES), kept explicit
        "trigger_word": params.trigger_word,
        "performance_log_every": 0,
        "training_seed": params.seed,
        "network": {"type": "lora", "linear": params.rank, "linear_alpha": params.alpha or params.rank},
        "save": {
            "dtype": "float16",
            "save_every": params.save_every,
            "max_step_saves_to_keep": params.max_step_saves_to_keep,
            "push_to_hub": False,
        },
        "datasets": [
            {
                "folder_path": str(dataset),
                "caption_ext": "txt",
                "default_caption": params.default_caption or "",
                "caption_dropout_rate": params.caption_dropout_rate,
                "shuffle_tokens": False,
                "cache_latents_to_disk": params.cache_latents_to_disk,
                "resolution": resolutions,
                "num_repeats": params.num_repeats,
                "flip_x": params.flip_x,
            }
        ],
        "train": {
            "batch_size": params.batch_size,
            "steps": params.steps,
            "gradient_accumulation": params.gradient_accumulation,
            "train_unet": True,
            "train_text_encoder": False,
            "gradient_checkpointing": params.gradient_checkpointing,
            "noise_scheduler": family.noise_scheduler,
            "timestep_type": family.timestep_type,
            "content_or_style": params.content_or_style,
            "optimizer": params.optimizer,
            "lr": params.learning_rate,
            "lr_scheduler": "constant",
            "max_grad_norm": 1.0,
            "loss_type": "mse",
            "dtype": "bf16",
            "ema_config": {"use_ema": params.use_ema, "ema_decay": 0.99},
            "disable_sampling": not sampling,
            "skip_first_sample": params.skip_first_sample,
        },
        "model": family.model_config(
            name_or_path,
            quantize=family.quantize if params.quantize is None else params.quantize,
            low_vram=params.low_vram,
        ),
        "sample": {
            "sampler": family.sampler,
            "sample_every": params.sample_every,
            "sample_start_step": 0,
            "width": family.sample_size,
            "height": family.sample_size,
            "prompts": list(params.sample_prompts),
            "neg": "",
            "seed": 42 if params.seed is None else params.seed,
            "walk_seed": True,
            "guidance_scale": family.guidance_scale,
            "sample_steps": family.sample_steps,
        },
        # Progress comes from the tqdm bar (it carries the loss), so the UI's loss_log.db would be a second
        # SQLite writer per step and three more files in the job folder that nothing reads.
        "logging": {"log_every": 100, "use_wandb": False, "use_ui_logger": False, "verbose": False},
    }
    config = {
        "job": "extension",
        "config": {"name": name, "process": [process]},
        "meta": {"name": "[name]", "version": "1.0", "lorapod_job": job_id},
    }
    refuse_env_references(config)
    return TrainingPlan(
        name=name,
        config=config,
        total_steps=params.steps,
        save_root=training_folder / name,
        base_model=name_or_path,
        datasets=[dataset],
        warnings=[],
    )


def refuse_env_references(value: Any, path: str = "") -> None:
    """Refuse any '${' left in a finished config's keys or text: ai-toolkit would fill it from its environment."""
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if "${" in str(key):
                raise InvalidInput(child, "contains '${', which ai-toolkit would fill from its environment")
            refuse_env_references(item, child)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            refuse_env_references(item, f"{path}[{i}]")
    elif isinstance(value, str) and "${" in value:
        raise InvalidInput(path, "contains '${', which ai-toolkit would fill from its environment")


def job_folder(workspace: Workspace, job_id: str) -> Path:
    """<workspace>/output/<job_id>: each job trains in its own folder, so none resumes another's checkpoint."""
    return workspace.child(workspace.output, job_id, field="job_id")


def dataset_folder(workspace: Workspace, training_name: str) -> Path:
    """The dataset folder under training_data/, checked to exist and hold an image before launch."""
    folder = workspace.child(workspace.training_data, training_name, field="training_name")
    if not folder.is_dir():
        raise InvalidInput("training_name", f"dataset '{training_name}' does not exist under training_data/")
    if not has_images(folder):
        raise InvalidInput(
            "training_name", f"dataset '{training_name}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return folder


def has_images(folder: Path) -> bool:
    """Whether the folder holds an image ai-toolkit would train on (recursive; hidden and _controls skipped)."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if Path(root).name == "_controls":
            continue
        if any(not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES for f in files):
            return True
    return False


def _name_from(training_name: str) -> str:
    """A valid LoRA name derived from the dataset name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", training_name).lstrip(".")[:64]
    return cleaned or "lora"
