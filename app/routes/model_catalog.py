"""/models: trained LoRAs and the base models on disk."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.deps import ServiceDep
from app.errors import error_responses
from core.jobs.service import JobService
from core.storage.catalog import list_base_models, list_loras

router = APIRouter(tags=["models"])

MODELS_EXAMPLE: dict[str, Any] = {
    "loras": [
        {
            "name": "my_lora.safetensors",
            "path": "output/train_ab12cd34ef56/my_lora/my_lora.safetensors",
            "size": 19764928,
            "modified": "2025-01-01T12:30:00Z",
            "process_id": "train_ab12cd34ef56",
            "step": 1000,
            "final": True,
            "url": "/files/output/train_ab12cd34ef56/my_lora/my_lora.safetensors",
        }
    ],
    "base_models": [
        {
            "name": "runwayml/stable-diffusion-v1-5",
            "source": "hf_cache",
            "path": "models/huggingface/hub/models--runwayml--stable-diffusion-v1-5",
            "format": "diffusers",
            "size": 5500000000,
            "modified": "2025-01-01T11:00:00Z",
            "repo_id": "runwayml/stable-diffusion-v1-5",
            "revisions": ["1d0c4ebf6ff58a5caecab40fa1406526bca4b5b9"],
        }
    ],
}


def _catalog(service: JobService) -> dict[str, Any]:
    workspace = service.workspace
    loras = [{**lora.to_dict(), "url": f"/files/{quote(lora.path)}"} for lora in list_loras(workspace)]
    return {"loras": loras, "base_models": [model.to_dict() for model in list_base_models(workspace)]}


@router.get(
    "/models",
    summary="List LoRAs and base models",
    description=(
        "`loras`: every LoRA file under `output/`, newest first, with the job that trained it, its step "
        "(null for a final save, which has `final: true`), size and time, and a download URL. "
        "`base_models`: models in the workspace `models/` folder (diffusers folders, single checkpoints) and "
        "in the Hugging Face cache kept in the workspace. Either can be passed as `base_model` or `lora`."
    ),
    responses={
        200: {"description": "The models.", "content": {"application/json": {"example": MODELS_EXAMPLE}}},
        **error_responses(401),
    },
)
async def get_models(service: ServiceDep) -> dict[str, Any]:
    """List LoRAs and base models."""
    return await run_in_threadpool(_catalog, service)
