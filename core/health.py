"""Worker health: GPUs, ai-toolkit, free disk, database, queue."""

from __future__ import annotations

import re
import shutil
from dataclasses import asdict
from functools import lru_cache
from pathlib import Path
from typing import Any

from core import __version__
from core.db import ping
from core.jobs.rows import JobStatus
from core.jobs.scheduler import Slot
from core.jobs.store import JobStore
from core.settings import Settings
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
    storage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The health object: healthy when the database answers, ai-toolkit is found and a configured bucket works."""
    storage = storage or {"configured": False}
    storage_ok = not storage.get("configured") or bool(storage.get("ok"))
    toolkit = toolkit_info(str(settings.ai_toolkit_dir) if settings.ai_toolkit_dir else None)
    database_ok = ping(store.engine)
    counts = store.counts_by_status() if database_ok else {}
    return {
        "status": "ok" if database_ok and toolkit["found"] and storage_ok else "degraded",
        "version": __version__,
        "worker_id": settings.worker_id,
        "gpus": [asdict(gpu) for gpu in detect_gpus()],
        "slots": [{"gpu": s.label, "job_id": s.job_id, "warm_model": s.warm_model} for s in slots],
        "ai_toolkit": toolkit,
        "disk": disk_report(workspace_root),
        "database": {"ok": database_ok, "dialect": store.engine.dialect.name},
        "storage": storage,
        "queue_depth": counts.get(JobStatus.queued, 0),
        "jobs": counts,
    }
