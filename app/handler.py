"""The RunPod Serverless adapter: `python -m app.handler` (add `--rp_serve_api` or `--test_input '{...}'` locally).

An async handler, so RunPod's cancel and timeout reach it as a cancelled task: the dispatcher then stops the
trainer before the job ends. One job service per worker, started on the SDK's event loop at the first job.
The workspace is LORAPOD_WORKSPACE when set, else the network volume `/runpod-volume` when one is mounted,
else `/workspace`. Importing this module is cheap: lorapod's own modules, the SDK (about 1.5 s) and torch load
only when used. A cold start overlaps the two: lorapod's start-up (imports, schema, job service) runs in a thread
while the SDK's import waits on a subprocess of its own, so the first job does not wait for either one twice.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.logging_setup import hold_root_logger
from app.memory import return_big_buffers_to_os

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from core.jobs.service import JobService
    from core.settings import Settings

log = logging.getLogger("lorapod.handler")

NETWORK_VOLUME = Path("/runpod-volume")
POD_WORKSPACE = Path("/workspace")
# A progress post still in flight when the result is posted can leave the request showing IN_PROGRESS
# (runpod-python #250); the result waits this long after the last progress post.
PROGRESS_SETTLE_SECONDS = 0.5

# How often the start-up thread looks whether the SDK's import has reached its wait.
SDK_WAIT_POLL_SECONDS = 0.002

_service: JobService | None = None
_service_lock: asyncio.Lock | None = None
# Built by main() while the SDK loaded; the first job starts it on the SDK's loop.
_prepared: JobService | None = None


def worker_settings() -> Settings:
    """Settings from the environment, with the serverless defaults for the workspace and the worker id."""
    from core.settings import Settings

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
    global _service, _service_lock, _prepared
    if _service_lock is None:
        _service_lock = asyncio.Lock()
    async with _service_lock:
        if _service is None:
            # A service that failed to start is not reused: the next job builds a fresh one.
            service, _prepared = _prepared or build_service(worker_settings()), None
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


def build_service(settings: Settings, engine: Engine | None = None) -> JobService:
    """A job service for settings (on engine when given), not started yet."""
    from core.jobs.service import JobService

    return JobService(settings, engine=engine)


async def handler(job: dict[str, Any]) -> dict[str, Any]:
    """RunPod handler: run `job["input"]` through the dispatcher; errors come back as {"error": ...}."""
    from core.contract.dispatcher import dispatch

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


def startup_checks(settings: Settings) -> Engine:
    """Once per worker, before taking jobs: workspace folders, database schema, GPUs and ai-toolkit, logged.

    Returns the engine it migrated, for the job service.
    """
    from core.db import make_engine, migrate
    from core.health import toolkit_info
    from core.storage.workspace import Workspace
    from gpu.devices import detect_gpus

    Workspace(settings.workspace).ensure()
    engine = make_engine(settings.effective_database_url)
    migrate(engine)
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
    return engine


def prepare(sdk_loaded: threading.Event) -> JobService | None:
    """lorapod's part of a cold start, once the SDK's import waits: logging, start-up checks, the job service."""
    # The SDK's import spends about a second waiting for py-cpuinfo's subprocess (runpod's rp_debugger asks for
    # the CPU's name when imported). Starting only then, this work takes a core nobody uses instead of slowing
    # the SDK's own imports down (one GIL); without cpuinfo it starts once the SDK is loaded, as before.
    while "cpuinfo" not in sys.modules and not sdk_loaded.wait(SDK_WAIT_POLL_SECONDS):
        pass
    from app.logging_setup import configure_logging
    from core.contract import dispatcher  # noqa: F401  (the first job's code, loaded before it comes)

    settings = worker_settings()
    configure_logging(settings)
    engine = startup_checks(settings)
    try:
        return build_service(settings, engine)
    except Exception:  # not fatal, as before: the first job builds it again and answers with the reason
        return None


def main() -> None:
    """Start the RunPod worker (or its local test modes)."""
    global _prepared
    return_big_buffers_to_os()  # download chunks pass through 10 MB buffers; see there
    # The SDK logs whole job inputs and outputs at DEBUG (base64 files, downloaded chunks); INFO unless asked.
    os.environ.setdefault("RUNPOD_LOG_LEVEL", "INFO")
    hold_root_logger()  # the start-up thread configures logging while the SDK's import would configure its own
    sdk_loaded = threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="lorapod-start-up") as pool:
        prepared = pool.submit(prepare, sdk_loaded)
        try:
            import runpod
        finally:
            sdk_loaded.set()
        # Failed start-up checks stop the worker here, before it takes a job, as they did when run inline.
        _prepared = prepared.result()
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
