"""The FastAPI app for pods and local GPUs (`app.main:app`)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.dashboard.routes import install_dashboard
from app.deps import Authorized
from app.docs import install_docs
from app.errors import install_error_handlers
from app.hot_paths import HotPaths
from app.http_metrics import HttpMetricsMiddleware
from app.routes import (
    captions,
    dataset_url,
    datasets,
    files,
    health,
    job_control,
    job_outputs,
    jobs,
    model_catalog,
    runpod,
)
from app.routes.job_views import JobBodies
from app.shutdown import install_drain
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

When `LORAPOD_API_KEY` is set, every route but `/health`, `/health/live` and `/health/ready` needs
`Authorization: Bearer <key>`.
"""


def create_app(settings: Settings | None = None, *, warn_without_key: bool = True) -> FastAPI:
    """Build the app around one job service; warn_without_key=False when the caller already warned."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = JobService(settings)
        app.state.service = service
        app.state.job_bodies = JobBodies()
        install_drain(app)
        if settings.api_key is None and warn_without_key:
            log.warning("LORAPOD_API_KEY is not set: the API has no authentication; keep it on 127.0.0.1")
        await service.start()
        try:
            yield
        finally:
            await service.close()
            log.info("job service closed")

    app = FastAPI(
        title="lorapod",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Served by install_docs from packaged assets instead of FastAPI's CDN-loaded pages.
        docs_url=None,
        redoc_url=None,
        # Operation ids are the route functions' names (unique in the app): generated clients get methods such
        # as jobs.get_job rather than get_job_jobs__job_id__get.
        generate_unique_id_function=lambda route: route.name,
        openapi_tags=[
            {"name": "jobs", "description": "Trainings and generations: start, follow, cancel, download."},
            {"name": "datasets", "description": "Training images and captions: uploads, caption editing, previews."},
            {"name": "models", "description": "Trained LoRAs and base models on disk."},
            {"name": "files", "description": "Browse and download the workspace."},
            {"name": "health", "description": "Details, liveness and readiness probes, and metrics."},
            {"name": "runpod", "description": "RunPod-compatible queue API (`runpod.Endpoint` works unchanged)."},
        ],
    )
    install_error_handlers(app)
    app.add_middleware(HotPaths)  # inside the metrics middleware, so its answers are counted too
    app.add_middleware(HttpMetricsMiddleware)
    install_docs(app)
    app.include_router(health.router)
    for module in (jobs, job_outputs, job_control, datasets, dataset_url, captions, model_catalog, files, runpod):
        app.include_router(module.router, dependencies=[Authorized])
    install_dashboard(app)  # open: the page holds no data; its API calls send the key
    return app


app = create_app()
