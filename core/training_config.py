"""ai-toolkit training configs: built from simple parameters, or checked and rewritten from raw YAML."""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from core.errors import InvalidInput
from core.model_families import family_for
from core.workspace import Workspace

NAME_PATTERN = re.compile(r"^(?!\.)[A-Za-z0-9._-]{1,64}$")
NAME_RULE = "must be 1-64 letters, digits, '.', '_' or '-', not starting with '.'"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
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
LORA_TRAINERS = ("sd_trainer", "diffusion_trainer", "textual_inversion_trainer")
MAX_STEPS = 100_000
MIN_RESOLUTION, MAX_RESOLUTION, RESOLUTION_STEP = 256, 2048, 64

# YAML parsing limits: a real config is a few hundred nodes; these stop alias bombs, deep nesting and the
# pure-Python parser's seconds on a wall of numbers (PyYAML composes roughly 20k nodes a second here).
MAX_ALIASES = 100
MAX_NODES = 10_000
MAX_DEPTH = 64
# Keys whose values are dataset paths ai-toolkit reads (config_modules.DatasetConfig).
DATASET_PATH_KEYS = (
    "folder_path",
    "dataset_path",
    "control_path",
    "control_path_1",
    "control_path_2",
    "control_path_3",
    "mask_path",
    "inpaint_path",
    "clip_image_path",
    "unconditional_path",
)
_SECRET_NAMES = frozenset({"token", "hf_token", "api_key", "apikey", "password", "passwd", "secret"})
_SECRET_SUFFIXES = ("_token", "_api_key", "_password", "_secret")


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
        # libyaml's emitter when present: the pure-Python one costs ~10 ms, on the job start path
        dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
        return yaml.dump(self.config, Dumper=dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)


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
        if value is not None and not NAME_PATTERN.match(value):
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


# -- raw YAML ------------------------------------------------------------------------------------------------


class _Refused(Exception):
    """A YAML document over the parser's limits."""


class _GuardedLoader(yaml.SafeLoader):
    """SafeLoader with limits on aliases, nesting and expanded size, and ai-toolkit's float reading."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._aliases = 0
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """Compose one node, counting aliases, nodes and depth."""
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                raise _Refused(f"uses more than {MAX_ALIASES} aliases")
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _Refused(f"has more than {MAX_NODES} nodes")
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"is nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node:
        """Compose the document and refuse it if aliases would expand it past the node limit."""
        node = super().compose_document()
        _check_expanded_size(node)
        return node


# ai-toolkit reads `lr: 1e-4` as a float (YAML 1.1 wants a dot); read it the same way so it is written back as one.
_GuardedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expanded_size(root: yaml.Node) -> None:
    """Count nodes as if every alias were copied out (shared subtrees counted once each use)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            size = 1 + sum(sizes[id(child)] for child in _children(node))
            if size > MAX_NODES:
                raise _Refused(f"expands to more than {MAX_NODES} nodes")
            sizes[key] = size
            on_path.discard(key)
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise _Refused("contains a recursive alias")
        on_path.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def load_yaml(text: str, *, field: str = "yaml_config") -> Any:
    """Parse YAML or JSON safely, with limits on aliases, nesting and size; errors name the field."""
    try:
        return yaml.load(text, Loader=_GuardedLoader)
    except _Refused as exc:
        raise InvalidInput(field, f"{exc}, which a training config never needs") from None
    except RecursionError:
        raise InvalidInput(field, f"is nested deeper than {MAX_DEPTH} levels") from None
    except yaml.MarkedYAMLError as exc:
        where = f" at line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise InvalidInput(field, f"is not valid YAML or JSON ({exc.problem}{where})") from None
    except yaml.YAMLError as exc:
        raise InvalidInput(field, f"is not valid YAML or JSON ({exc})") from None


def parse_yaml_config(text: str, *, workspace: Workspace, job_id: str, max_bytes: int = 256 * 1024) -> TrainingPlan:
    """Check a caller's ai-toolkit config and rewrite what lorapod owns (folders, dataset paths, secrets)."""
    if len(text.encode("utf-8")) > max_bytes:
        raise InvalidInput("yaml_config", f"is larger than {max_bytes} bytes")
    if "${" in text:
        raise InvalidInput(
            "yaml_config",
            "contains '${...}', which ai-toolkit would fill from its environment (and so could leak HF_TOKEN)",
        )
    raw = load_yaml(text)
    if not isinstance(raw, dict):
        raise InvalidInput("yaml_config", f"must be a mapping with 'job' and 'config' keys, not {_kind(raw)}")
    warnings: list[str] = []
    data = _plain(raw, "", warnings)

    job = data.setdefault("job", "extension")
    if job != "extension":
        raise InvalidInput("job", f"must be 'extension' (the LoRA trainers' job type), not {job!r}")
    config = _mapping(data.get("config"), "config")
    name = config.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput("config.name", "is missing: it names the LoRA and its output folder")
    if not NAME_PATTERN.match(name):
        raise InvalidInput("config.name", NAME_RULE)

    processes = config.get("process")
    if not isinstance(processes, list) or not processes:
        raise InvalidInput("config.process", "must be a non-empty list of processes")
    if len(processes) > 1:
        raise InvalidInput(
            "config.process",
            f"holds {len(processes)} processes; lorapod runs one training per job (processes share "
            "one output folder, so a second would resume from the first's checkpoint)",
        )
    process = _mapping(processes[0], "config.process[0]")
    _check_trainer_type(process.get("type"))

    training_folder = job_folder(workspace, job_id)
    _take_over_folders(config, process, training_folder, workspace, warnings)
    model = _mapping(process.get("model"), "config.process[0].model")
    base_model = model.get("name_or_path")
    if not isinstance(base_model, str) or not base_model.strip():
        raise InvalidInput("config.process[0].model.name_or_path", "is missing: name the base model to train on")
    for key in ("name_or_path", "lora_path", "assistant_lora_path", "vae_path", "te_name_or_path"):
        _rewrite_local_path(model, key, workspace, f"config.process[0].model.{key}")
    datasets = _rewrite_datasets(process, workspace)
    total_steps = _steps(process)

    meta = data.get("meta")
    if meta is None:
        meta = data["meta"] = {"name": "[name]", "version": "1.0"}
    meta = _mapping(meta, "meta")
    meta["lorapod_job"] = job_id

    ordered = {"job": data.pop("job"), "config": data.pop("config"), **data}
    # the text check above misses YAML escapes ("\x24{") and folder names met while resolving paths
    refuse_env_references(ordered)
    return TrainingPlan(
        name=name,
        config=ordered,
        total_steps=total_steps,
        save_root=training_folder / name,
        base_model=base_model,
        datasets=datasets,
        warnings=warnings,
    )


def _rewrite_local_path(section: dict[str, Any], key: str, workspace: Workspace, field: str) -> None:
    """A model key that names a local path must stay in the workspace; a Hub repo id ("org/name") passes."""
    value = section.get(key)
    if not isinstance(value, str) or (not value.startswith(("/", "./", "../", "~")) and ".." not in value.split("/")):
        return
    section[key] = str(workspace.resolve(value, field=field))


def _kind(value: Any) -> str:
    if value is None:
        return "an empty document"
    if isinstance(value, list):
        return "a list"
    return f"a {type(value).__name__}"


def _mapping(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput(field, f"must be a mapping, not {_kind(value)}")
    return value


def _is_secret_key(key: str) -> bool:
    lowered = key.lower().replace("-", "_")
    return lowered in _SECRET_NAMES or lowered.endswith(_SECRET_SUFFIXES)


def _plain(value: Any, path: str, warnings: list[str]) -> Any:
    """A copy with JSON-ready types only (it is stored in the database) and secret-looking keys removed."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(path or "yaml_config", f"has a non-text key {key!r}; keys must be text")
            child = f"{path}.{key}" if path else key
            if _is_secret_key(key):
                warnings.append(
                    f"removed the secret-looking key '{child}': secrets are never stored in a config "
                    "(HF_TOKEN reaches the trainer through the environment)"
                )
                continue
            out[key] = _plain(item, child, warnings)
        return out
    if isinstance(value, list):
        return [_plain(item, f"{path}[{i}]", warnings) for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidInput(path, "must be a finite number")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    raise InvalidInput(path or "yaml_config", f"has a {type(value).__name__} value; use text, numbers or lists")


def _check_trainer_type(kind: Any) -> None:
    field = "config.process[0].type"
    trainers = ", ".join(LORA_TRAINERS)
    if kind is None:
        raise InvalidInput(field, f"is missing: use one of {trainers}")
    if kind == "ui_trainer":
        raise InvalidInput(
            field, f"'ui_trainer' needs ai-toolkit's UI database and job id; use one of {trainers} instead"
        )
    if kind not in LORA_TRAINERS:
        raise InvalidInput(field, f"{kind!r} is not a LoRA trainer: use one of {trainers}")


def _take_over_folders(
    config: dict[str, Any],
    process: dict[str, Any],
    training_folder: Path,
    workspace: Workspace,
    warnings: list[str],
) -> None:
    """Set what lorapod owns: the training folder, no UI database, no hub upload, logs inside the workspace."""
    target = workspace.relative(training_folder)
    for owner, path in ((process, "config.process[0]"), (config, "config")):
        if "training_folder" in owner:
            given = owner.pop("training_folder")
            warnings.append(
                f"{path}.training_folder ({given!r}) was replaced by {target}: each job trains in its own folder"
            )
        if "log_dir" in owner:
            if not isinstance(owner["log_dir"], str):
                raise InvalidInput(f"{path}.log_dir", "must be a folder path inside the workspace")
            owner["log_dir"] = str(workspace.resolve(owner["log_dir"], field=f"{path}.log_dir"))
    process["training_folder"] = str(training_folder)
    if process.pop("sqlite_db_path", None) is not None:
        warnings.append("config.process[0].sqlite_db_path was dropped: lorapod does not use ai-toolkit's UI database")
    save = process.get("save")
    if isinstance(save, dict) and save.get("push_to_hub"):
        save["push_to_hub"] = False
        warnings.append(
            "config.process[0].save.push_to_hub was turned off: uploads would use the server's Hugging Face "
            "token (or wait for an interactive login); download the LoRA instead"
        )


def _rewrite_datasets(process: dict[str, Any], workspace: Workspace) -> list[Path]:
    """Resolve every dataset path inside the workspace, rewrite it absolute, and check each dataset exists."""
    datasets = process.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise InvalidInput("config.process[0].datasets", "must list at least one dataset")
    mains: list[Path] = []
    for i, raw in enumerate(datasets):
        prefix = f"config.process[0].datasets[{i}]"
        dataset = _mapping(raw, prefix)
        for key in DATASET_PATH_KEYS:
            value = dataset.get(key)
            if value is None or value == "":
                continue
            if isinstance(value, list) and key == "control_path":
                dataset[key] = [_dataset_path(item, f"{prefix}.{key}[{j}]", workspace) for j, item in enumerate(value)]
            else:
                dataset[key] = _dataset_path(value, f"{prefix}.{key}", workspace)
        main_key = "folder_path" if dataset.get("folder_path") else "dataset_path"
        if not dataset.get(main_key):
            raise InvalidInput(f"{prefix}.folder_path", "is missing: name the folder holding the images")
        main = Path(dataset[main_key])
        field = f"{prefix}.{main_key}"
        if not main.exists():
            raise InvalidInput(field, f"'{workspace.relative(main)}' does not exist in the workspace")
        if main.is_dir() and not has_images(main):
            raise InvalidInput(field, f"'{workspace.relative(main)}' holds no images")
        mains.append(main)
    return mains


def _dataset_path(value: Any, field: str, workspace: Workspace) -> str:
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a path (text) inside the workspace")
    return str(workspace.resolve(value, field=field))


def _steps(process: dict[str, Any]) -> int:
    train = process.get("train")
    if train is None:
        return 1000  # ai-toolkit's own default
    train = _mapping(train, "config.process[0].train")
    steps = train.get("steps", 1000)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise InvalidInput("config.process[0].train.steps", f"must be a whole number from 1 to {MAX_STEPS}")
    return steps
