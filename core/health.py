"""Worker health: GPUs, ai-toolkit, free disk, database, queue."""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from core import __version__
from core.jobs.rows import JobStatus
from core.jobs.scheduler import Scheduler, Slot
from core.jobs.store import JobStore
from core.metrics import ServiceMetrics
from core.readiness import GenerationProbe
from core.settings import Settings
from core.storage.bundles import BundleKeeper
from gpu.devices import detect_gpus

_VERSION_RE = re.compile(r"""^VERSION\s*=\s*["']([^"']+)["']""", re.MULTILINE)


@lru_cache(maxsize=8)
def toolkit_info(toolkit_dir: str | None) -> dict[str, Any]:
    """Whether ai-toolkit's run.py is there, its version (version.py) and git commit, read once."""
    if not toolkit_dir:
        return {"found": False, "dir": None, "version": None, "commit": None, "reason": "AI_TOOLKIT_DIR is not set"}
    root = Path(toolkit_dir)
    found = (root / "run.py").is_file()
    version = None
    if (root / "version.py").is_file():
        match = _VERSION_RE.search((root / "version.py").read_text(errors="replace"))
        version = match.group(1) if match else None
    info: dict[str, Any] = {"found": found, "dir": str(root), "version": version, "commit": _git_commit(root)}
    if not found:
        info["reason"] = f"no run.py in {root}"
    return info


def _git_commit(root: Path) -> str | None:
    head = root / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            return (root / ".git" / ref[5:]).read_text().strip() or None
        return ref or None
    except OSError:
        return None


def disk_report(path: Path) -> dict[str, int | str]:
    """Free and total bytes of the filesystem holding path."""
    usage = shutil.disk_usage(path)
    return {"path": str(path), "free_bytes": usage.free, "total_bytes": usage.total}


def health_report(
    *,
    settings: Settings,
    store: JobStore,
    slots: list[Slot],
    workspace_root: Path,
    generation: GenerationProbe,
    bundles: BundleKeeper,
    storage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The health object: ok when the database answers, ai-toolkit is found, a configured bucket works and
    generation is not known broken."""
    storage = storage or {"configured": False}
    storage_ok = not storage.get("configured") or bool(storage.get("ok"))
    toolkit = toolkit_info(str(settings.ai_toolkit_dir) if settings.ai_toolkit_dir else None)
    try:  # the counts' query doubles as the database's ping
        counts, database_ok = store.counts_by_status(), True
    except Exception:
        counts, database_ok = {}, False
    generation_report = generation.report()
    healthy = database_ok and toolkit["found"] and generation_report["ready"] is not False
    return {
        "status": "ok" if healthy and storage_ok else "degraded",
        "version": __version__,
        "worker_id": settings.worker_id,
        "gpus": [asdict(gpu) for gpu in detect_gpus()],
        "slots": [{"gpu": s.label, "job_id": s.job_id, "warm_model": s.warm_model} for s in slots],
        "ai_toolkit": toolkit,
        "generation": generation_report,
        "disk": disk_report(workspace_root),
        "bundles": bundles.usage(),
        "database": {"ok": database_ok, "dialect": store.engine.dialect.name},
        "storage": storage,
        "queue_depth": counts.get(JobStatus.queued, 0),
        "jobs": counts,
    }


SCRAPE_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "lorapod_jobs": ("Jobs in the process table, by status (falls when jobs are deleted).", ("status",)),
    "lorapod_queue_depth": ("Jobs waiting for a GPU slot.", ()),
    "lorapod_gpu_slots_total": ("GPU slots this worker schedules on.", ()),
    "lorapod_gpu_slots_busy": ("GPU slots running a job now.", ()),
    "lorapod_warm_generators": ("Generation workers alive with a model loaded or loading.", ()),
    "lorapod_workspace_free_bytes": ("Free bytes on the workspace's filesystem.", ()),
    "lorapod_generation_ready": ("1 when the generation environment imports torch and diffusers, else 0.", ()),
}


def install_scrape_gauges(
    *,
    metrics: ServiceMetrics,
    store: JobStore,
    scheduler: Scheduler,
    workspace_root: Path,
    generation: GenerationProbe,
) -> None:
    """Register the gauges read at each scrape (queue depth, busy slots, warm generators, free disk)."""

    def read() -> dict[str, Any]:
        counts = store.counts_by_status()
        slots = scheduler.slots
        return {
            "lorapod_jobs": {(str(status),): float(counts.get(status, 0)) for status in JobStatus},
            "lorapod_queue_depth": counts.get(JobStatus.queued, 0),
            "lorapod_gpu_slots_total": len(slots),
            "lorapod_gpu_slots_busy": scheduler.busy_slots,
            "lorapod_warm_generators": sum(1 for s in slots if s.generator is not None and s.generator.running),
            "lorapod_workspace_free_bytes": shutil.disk_usage(workspace_root).free,
            "lorapod_generation_ready": 1 if generation.ready else 0,
        }

    metrics.add_gauges(read, SCRAPE_GAUGES)
