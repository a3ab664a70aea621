"""The FastAPI app for pods and local GPUs (`app.main:app`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.deps import Authorized
from app.errors import install_error_handlers
from app.routes import datasets, files, health, job_control, job_outputs, jobs, model_catalog, runpod
from core import __version__
from core.jobs.service import JobService
from core.settings import Settings, get_settings

log = logging.getLogger("lorapod")

DESCRIPTION = """
lorapod trains LoRAs with [ostris/ai-toolkit](https://github.com/ostris/ai-toolkit) and generates images
with them. Upload a dataset, start a training from simple parameters or a whole ai-toolkit YAML, follow
its progress live, cancel it, and download the LoRA files and samples.

The same payloads work on RunPod Serverless: the `/v2/{endpoint_id}/...` routes mirror RunPod's queue API,
so the stock `runpod` client drives a pod exactly as it drives the cloud.

When `LORAPOD_API_KEY` is set, every route but `/health` needs `Authorization: Bearer <key>`.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app around one job service."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = JobService(settings)
        app.state.service = service
        if settings.api_key is None:
            log.warning("LORAPOD_API_KEY is not set: the API has no authentication; keep it on 127.0.0.1")
        await service.start()
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(
        title="lorapod",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_tags=[
            {"name": "jobs", "description": "Trainings and generations: start, follow, cancel, download."},
            {"name": "datasets", "description": "Training images and captions."},
            {"name": "models", "description": "Trained LoRAs and base models on disk."},
            {"name": "files", "description": "Browse and download the workspace."},
            {"name": "health", "description": "Liveness, details and metrics."},
            {"name": "runpod", "description": "RunPod-compatible queue API (`runpod.Endpoint` works unchanged)."},
        ],
    )
    install_error_handlers(app)
    app.include_router(health.router)
    for module in (jobs, job_outputs, job_control, datasets, model_catalog, files, runpod):
        app.include_router(module.router, dependencies=[Authorized])
    return app


app = create_app()
