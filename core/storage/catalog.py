"""What models are on disk: trained LoRAs under output/ and base models under models/ and the hub cache."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any

from core.errors import InvalidInput
from core.storage.files import iso_utc
from core.storage.safetensors import NotSafetensors, read_metadata
from core.storage.workspace import Workspace

_JOB_ID = re.compile(r"train_[0-9a-f]{12}")
_STEP_SUFFIX = re.compile(r"_(\d{9})\.safetensors$", re.IGNORECASE)
_CHECKPOINT_SUFFIXES = frozenset({".safetensors", ".ckpt"})


@dataclass(frozen=True, slots=True)
class LoraInfo:
    """One LoRA file under output/: a step checkpoint or a final save."""

    name: str
    path: str  # workspace-relative
    size: int
    modified: str
    process_id: str | None
    step: int | None
    final: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BaseModelInfo:
    """A base model on disk: a local diffusers folder or checkpoint, or a repo in a hub cache."""

    name: str
    source: str  # "local" or "hf_cache"
    path: str  # workspace-relative when inside the workspace, else absolute
    format: str  # "diffusers", "single_file" or "hub" (a cached repo without model_index.json)
    size: int
    modified: str
    repo_id: str | None = None
    revisions: list[str] = dataclass_field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def read_safetensors_metadata(path: Path) -> dict[str, str] | None:
    """The __metadata__ of a .safetensors file from its header alone (no tensors read); None if unreadable."""
    try:
        return read_metadata(path)
    except NotSafetensors:
        return None


def _step_from_metadata(path: Path) -> int | None:
    metadata = read_safetensors_metadata(path) or {}
    try:
        info = json.loads(metadata.get("training_info", ""))
        step = info.get("step")
    except (TypeError, ValueError, AttributeError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _lora_files(workspace: Workspace) -> Iterator[Path]:
    """*.safetensors under output/, leaving out generated images, bundles, hidden names and diffusers parts."""
    skip = {workspace.generated, workspace.output / "bundles"}
    for dirpath, dirnames, filenames in os.walk(workspace.output):
        current = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and current / d not in skip]
        # A folder with config.json is a diffusers/transformers component (a full fine-tune), not a LoRA.
        if "config.json" in filenames:
            continue
        for name in filenames:
            if name.lower().endswith(".safetensors") and not name.startswith("."):
                path = current / name
                if path.is_file():
                    yield path


def list_loras(workspace: Workspace) -> list[LoraInfo]:
    """Every LoRA file under output/, newest first, with its job id and training step where known."""
    found: list[tuple[float, LoraInfo]] = []
    for path in _lora_files(workspace):
        stat = path.stat()
        parts = path.relative_to(workspace.output).parts
        match = _STEP_SUFFIX.search(path.name)
        step = int(match.group(1)) if match else _step_from_metadata(path)
        info = LoraInfo(
            name=path.name,
            path=workspace.relative(path),
            size=stat.st_size,
            modified=iso_utc(stat.st_mtime),
            process_id=parts[0] if len(parts) > 1 and _JOB_ID.fullmatch(parts[0]) else None,
            step=step,
            final=match is None,
        )
        found.append((stat.st_mtime, info))
    found.sort(key=lambda item: (-item[0], item[1].path))
    return [info for _, info in found]


def find_lora(workspace: Workspace, name: str, *, field: str = "lora") -> Path | None:
    """The newest LoRA under output/ with this exact file name (".safetensors" may be left off)."""
    if not isinstance(name, str) or not name or any(c in name for c in "/\\\x00") or name in (".", ".."):
        raise InvalidInput(field, "must be a LoRA file name such as 'my_lora.safetensors'")
    wanted = name if name.lower().endswith(".safetensors") else f"{name}.safetensors"
    matches = [p for p in _lora_files(workspace) if p.name == wanted]
    return max(matches, key=lambda p: p.stat().st_mtime) if matches else None


def list_base_models(workspace: Workspace, extra_caches: list[Path] | None = None) -> list[BaseModelInfo]:
    """Base models in models/ (diffusers folders, single checkpoints) and in the hub caches, by name."""
    models = _local_models(workspace)
    seen: set[Path] = set()
    for cache in [workspace.hf_cache, *(extra_caches or [])]:
        # HF_HOME holds the hub cache in hub/; HF_HUB_CACHE is the cache itself. Accept either.
        for root in (Path(cache), Path(cache) / "hub"):
            resolved = root.resolve()
            if resolved in seen or not resolved.is_dir():
                continue
            seen.add(resolved)
            models.extend(_cached_models(workspace, resolved))
    return sorted(models, key=lambda m: (m.name.lower(), m.source))


def _local_models(workspace: Workspace) -> list[BaseModelInfo]:
    found: list[BaseModelInfo] = []
    if not workspace.models.is_dir():
        return found
    for dirpath, dirnames, filenames in os.walk(workspace.models):
        current = Path(dirpath)
        if "model_index.json" in filenames:
            dirnames[:] = []  # its components are part of this model, not models of their own
            found.append(_local(workspace, current, "diffusers", _tree_size(current)))
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and current / d != workspace.hf_cache)
        for name in sorted(filenames):
            path = current / name
            if not name.startswith(".") and path.suffix.lower() in _CHECKPOINT_SUFFIXES and path.is_file():
                found.append(_local(workspace, path, "single_file", path.stat().st_size))
    return found


def _local(workspace: Workspace, path: Path, fmt: str, size: int) -> BaseModelInfo:
    return BaseModelInfo(
        name=path.relative_to(workspace.models).as_posix(),
        source="local",
        path=workspace.relative(path),
        format=fmt,
        size=size,
        modified=iso_utc(path.stat().st_mtime),
    )


def _cached_models(workspace: Workspace, cache: Path) -> list[BaseModelInfo]:
    found: list[BaseModelInfo] = []
    for repo in sorted(cache.glob("models--*")):
        snapshots = repo / "snapshots"
        if not snapshots.is_dir():
            continue
        # Hub folder names are "models--" + repo_id with "/" as "--"; the Hub forbids "--" inside names.
        repo_id = repo.name.removeprefix("models--").replace("--", "/", 1)
        revisions = sorted(p.name for p in snapshots.iterdir() if p.is_dir())
        diffusers = any((snapshots / rev / "model_index.json").exists() for rev in revisions)
        blobs = repo / "blobs"
        size = (
            sum(p.stat().st_size for p in blobs.iterdir() if p.is_file() and not p.name.endswith(".incomplete"))
            if blobs.is_dir()
            else 0
        )
        inside = repo.is_relative_to(workspace.root)
        found.append(
            BaseModelInfo(
                name=repo_id,
                source="hf_cache",
                path=workspace.relative(repo) if inside else str(repo),
                format="diffusers" if diffusers else "hub",
                size=size,
                modified=iso_utc(repo.stat().st_mtime),
                repo_id=repo_id,
                revisions=revisions,
            )
        )
    return found


def _tree_size(folder: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file():
                total += path.stat().st_size
    return total
