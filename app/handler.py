"""The RunPod Serverless adapter: `python -m app.handler` (add `--rp_serve_api` or `--test_input '{...}'` locally).

An async handler, so RunPod's cancel and timeout reach it as a cancelled task: the dispatcher then stops the
trainer before the job ends. One job service per worker, started on the SDK's event loop at the first job.
The workspace is LORAPOD_WORKSPACE when set, else the network volume `/runpod-volume` when one is mounted,
else `/workspace`. Importing this module is cheap: the SDK (about 2 s) and torch load only when used.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from pathlib import Path
from typing import Any

from app.logging_setup import configure_logging
from core.contract.dispatcher import dispatch
from core.jobs.service import JobService
from core.settings import Settings

log = logging.getLogger("lorapod.handler")

NETWORK_VOLUME = Path("/runpod-volume")
POD_WORKSPACE = Path("/workspace")
# A progress post still in flight when the result is posted can leave the request showing IN_PROGRESS
# (runpod-python #250); the result waits this long after the last progress post.
PROGRESS_SETTLE_SECONDS = 0.5

_service: JobService | None = None
_service_lock: asyncio.Lock | None = None


def worker_settings() -> Settings:
    """Settings from the environment, with the serverless defaults for the workspace and the worker id."""
    env = os.environ
    overrides: dict[str, Any] = {}
    if not env.get("LORAPOD_WORKSPACE"):
        overrides["workspace"] = default_workspace()
    if not env.get("LORAPOD_WORKER_ID") and env.get("RUNPOD_POD_ID"):
        # The platform's name for this worker; restart recovery only touches jobs of the same worker id.
        overrides["worker_id"] = env["RUNPOD_POD_ID"]
    return Settings(**overrides)


def default_workspace() -> Path:
    """The network volume when mounted, else /workspace; ./workspace where /workspace cannot be made (a laptop)."""
    if NETWORK_VOLUME.is_dir():
        return NETWORK_VOLUME
    if POD_WORKSPACE.is_dir() or os.access(POD_WORKSPACE.parent, os.W_OK):
        return POD_WORKSPACE
    log.warning("%s cannot be created here; using ./workspace (set LORAPOD_WORKSPACE to choose)", POD_WORKSPACE)
    return Path("workspace")


async def get_service() -> JobService:
    """This worker's one job service, built and started on the running loop at first use."""
    global _service, _service_lock
    if _service_lock is None:
        _service_lock = asyncio.Lock()
    async with _service_lock:
        if _service is None:
            service = JobService(worker_settings())
            await service.start()
            _service = service
    return _service


class _Progress:
    """Sends progress with the SDK's progress_update and remembers when it last did."""

    def __init__(self, job: dict[str, Any]) -> None:
        self.job = job
        self.last_sent = 0.0

    def __call__(self, update: dict[str, Any]) -> None:
        import runpod.serverless

        runpod.serverless.progress_update(self.job, update)
        self.last_sent = time.monotonic()

    async def settle(self) -> None:
        """Give a just-sent progress post time to land before the result does."""
        pending = PROGRESS_SETTLE_SECONDS - (time.monotonic() - self.last_sent)
        if self.last_sent and pending > 0:
            await asyncio.sleep(pending)


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """RunPod handler: run `job["input"]` through the dispatcher; errors come back as {"error": ...}."""
    payload = job.get("input")
    if not isinstance(payload, dict):
        return {"error": 'input: must be a JSON object, as in {"input": {"type": ...}}'}
    try:
        service = await get_service()
    except Exception as exc:  # the next job tries again; this one says why it could not run
        log.exception("the job service could not start")
        return {"error": f"worker start-up failed: {type(exc).__name__}: {exc}"}
    progress = _Progress(job)
    result = await dispatch(service, payload, progress=progress)
    await progress.settle()
    return result


def startup_checks(settings: Settings) -> None:
    """Once per worker, before taking jobs: workspace folders, database schema, GPUs and ai-toolkit, logged."""
    from core.db import make_engine, migrate
    from core.health import toolkit_info
    from core.storage.workspace import Workspace
    from gpu.devices import detect_gpus

    Workspace(settings.workspace).ensure()
    engine = make_engine(settings.effective_database_url)
    migrate(engine)
    engine.dispose()
    gpus = detect_gpus()
    log.info("workspace %s; GPUs: %s", settings.workspace, ", ".join(g.name for g in gpus) or "none (CPU slot)")
    from core.storage.objects import ObjectStore, StorageError

    objects = ObjectStore.from_settings(settings)
    if objects is None:
        log.info("no bucket configured: datasets and outputs stay in the workspace")
    else:
        try:
            objects.check()
            log.info("bucket '%s' at %s, prefix '%s'", objects.bucket, objects.location.endpoint_url, objects.prefix)
        except StorageError as exc:  # logged loudly; health and every call that needs the bucket say it too
            log.error("object storage is not usable: %s", exc.message)
    toolkit = toolkit_info(str(settings.ai_toolkit_dir) if settings.ai_toolkit_dir else None)
    if not toolkit["found"]:
        log.warning("ai-toolkit not found (%s): train and train_with_yaml will fail", toolkit.get("reason"))


def main() -> None:
    """Start the RunPod worker (or its local test modes)."""
    # The SDK logs whole job inputs and outputs at DEBUG (base64 files, downloaded chunks); INFO unless asked.
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")
    settings = worker_settings()
    configure_logging(settings)
    startup_checks(settings)
    import runpod

    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
