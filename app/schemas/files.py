"""Workspace files and the model catalog as the REST routes show them."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.schemas import Schema, examples

FILE_EXAMPLE: dict[str, Any] = {
    "path": "output/train_ab12cd34ef56/my_lora.safetensors",
    "size": 171969416,
    "modified": "2025-01-01T12:00:00Z",
    "kind": "model",
    "url": "/files/output/train_ab12cd34ef56/my_lora.safetensors",
}
LORA_EXAMPLE: dict[str, Any] = {
    "name": "my_lora.safetensors",
    "path": "output/train_ab12cd34ef56/my_lora/my_lora.safetensors",
    "size": 19764928,
    "modified": "2025-01-01T12:30:00Z",
    "process_id": "train_ab12cd34ef56",
    "step": 1000,
    "final": True,
    "url": "/files/output/train_ab12cd34ef56/my_lora/my_lora.safetensors",
}
BASE_MODEL_EXAMPLE: dict[str, Any] = {
    "name": "runwayml/stable-diffusion-v1-5",
    "source": "hf_cache",
    "path": "models/huggingface/hub/models--runwayml--stable-diffusion-v1-5",
    "format": "diffusers",
    "size": 5500000000,
    "modified": "2025-01-01T11:00:00Z",
    "repo_id": "runwayml/stable-diffusion-v1-5",
    "revisions": ["1d0c4ebf6ff58a5caecab40fa1406526bca4b5b9"],
}


class WorkspaceFile(Schema):
    """One file of the workspace."""

    model_config = examples(FILE_EXAMPLE)

    path: str = Field(description="Relative to the workspace.")
    size: int = Field(description="Bytes.")
    modified: str = Field(description="ISO 8601 (UTC).")
    kind: str = Field(description="`image`, `model`, `caption`, `config`, `log`, `archive` or `other`.")
    url: str = Field(description="Where to download it (`GET /files/{path}`).")


class FileList(Schema):
    """Workspace files, sorted by path."""

    model_config = examples({"data": [FILE_EXAMPLE]})

    data: list[WorkspaceFile]


class Lora(Schema):
    """A LoRA file under `output/`: a step checkpoint or a final save."""

    model_config = examples(LORA_EXAMPLE)

    name: str
    path: str = Field(description="Relative to the workspace.")
    size: int
    modified: str
    process_id: str | None = Field(default=None, description="The training that wrote it, when known.")
    step: int | None = Field(default=None, description="Its step; null for a final save.")
    final: bool
    url: str


class BaseModelFile(Schema):
    """A base model on disk: a diffusers folder, a single checkpoint, or a repo in the Hugging Face cache."""

    model_config = examples(BASE_MODEL_EXAMPLE)

    name: str = Field(description="What to pass as `base_model`.")
    source: str = Field(description="`local` (the workspace's models/ folder) or `hf_cache`.")
    path: str
    format: str = Field(description="`diffusers`, `single_file` or `hub`.")
    size: int
    modified: str
    repo_id: str | None = None
    revisions: list[str] = Field(default_factory=list)


class ModelCatalog(Schema):
    """Trained LoRAs, newest first, and the base models on disk."""

    model_config = examples({"loras": [LORA_EXAMPLE], "base_models": [BASE_MODEL_EXAMPLE]})

    loras: list[Lora]
    base_models: list[BaseModelFile]
