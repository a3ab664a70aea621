"""Anchor for P1 (cold start): a bare RunPod serverless worker with a trivial handler, as the SDK's docs write it.

Run it as the platform would: `python bench/anchors/bare_worker.py` with RUNPOD_WEBHOOK_GET_JOB and friends set.
"""

from typing import Any

import runpod


def handler(job: dict[str, Any]) -> dict[str, Any]:
    """Echo the job's input."""
    return {"echo": job["input"]}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
