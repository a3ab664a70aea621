"""/models: trained LoRAs and the base models on disk."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.deps import ServiceDep
from app.errors import error_responses
from app.schemas.files import ModelCatalog
from core.jobs.service import JobService
from core.storage.catalog import list_base_models, list_loras

router = APIRouter(tags=["models"])


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
    response_model=ModelCatalog,
    responses={200: {"description": "The models."}, **error_responses(401)},
)
async def get_models(service: ServiceDep) -> dict[str, Any]:
    """List LoRAs and base models."""
    return await run_in_threadpool(_catalog, service)
