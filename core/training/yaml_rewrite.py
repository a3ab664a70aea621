"""A caller's whole ai-toolkit YAML, checked and rewritten where lorapod owns the keys (folders, datasets)."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

from core.errors import InvalidInput
from core.redaction import is_secret_key, is_secret_value
from core.storage.names import check_name
from core.storage.workspace import Workspace
from core.training.builder import TrainingPlan, has_images, job_folder, refuse_env_references
from core.training.params import MAX_STEPS
from core.training.paths import contain_paths
from core.training.yaml_loader import load_yaml

LORA_TRAINERS = ("sd_trainer", "diffusion_trainer", "textual_inversion_trainer")


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
    check_name(name, "config.name")

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
    datasets = _rewrite_datasets(process, workspace)
    # every other key that names a local file, by one rule (core.training.paths), not a list of keys
    contained = contain_paths(config, workspace, "config")
    config.clear()
    config.update(contained)
    process = config["process"][0]
    model = process["model"]
    base_model = model["name_or_path"]
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


def _plain(value: Any, path: str, warnings: list[str]) -> Any:
    """A copy with JSON-ready types only (it is stored in the database) and secret-looking keys removed."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(path or "yaml_config", f"has a non-text key {key!r}; keys must be text")
            child = f"{path}.{key}" if path else key
            if is_secret_key(key) or is_secret_value(item):
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
