"""P3's anchor: a trivial handler served by the runpod SDK's own local API server (`/runsync`, `/run`, ...).

Run: python bench/anchors/runpod_trivial_handler.py --rp_serve_api --rp_api_port 8000 --rp_api_host 127.0.0.1
then POST {"input": {"type": "health"}} to http://127.0.0.1:8000/runsync.
"""

from __future__ import annotations

from typing import Any

import runpod


def handler(job: dict[str, Any]) -> dict[str, Any]:
    """Answer every job at once with a constant."""
    return {"status": "ok"}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
