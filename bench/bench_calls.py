"""P3: `POST /v2/{endpoint}/runsync` with `{"input": {"type": "health"}}`, req/s and p99 under wrk.

Anchor, measured in the same run: runpod's own local API server (`--rp_serve_api`) serving a trivial handler
(bench/anchors/runpod_trivial_handler.py), sent the same body on its `/runsync`. lorapod is served as a pod is
deployed: `python -m app serve` on a fresh workspace with LORAPOD_API_KEY set, the Bearer header sent.
Rounds alternate between the two; medians are compared.
Run: python bench/bench_calls.py [--quick] [--json PATH]  (exit 1 when a goal is missed)
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.http_load import PYTHON, ROOT, ROUNDS, SECONDS, Load, alternate, free_port, server, wrk
from bench.report import Figure, finish, higher_is_better, lower_is_better

API_KEY = "bench-key"
BODY = json.dumps({"input": {"type": "health"}}).encode()
ANCHOR = "runpod SDK --rp_serve_api, trivial handler"
FAKE_TOOLKIT = ROOT / "tests" / "fakes" / "ai_toolkit"


def post(url: str, headers: dict[str, str]) -> dict[str, Any]:
    """POST the health body once; the decoded answer (urllib raises on a non-2xx status)."""
    request = urllib.request.Request(url, data=BODY, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return dict(json.loads(answer.read()))


def checked(url: str, headers: dict[str, str], is_right: Callable[[dict[str, Any]], bool]) -> Callable[[], Load]:
    """A wrk round against url, once its answer was checked to be 200 with the right body."""
    answer = post(url, headers)
    if answer.get("status") != "COMPLETED" or not is_right(answer.get("output") or {}):
        raise SystemExit(f"{url} answered {answer!r}, not a completed health call")
    seconds = 2 if "--quick" in sys.argv else SECONDS
    return lambda: wrk(url, method="POST", body=BODY, headers=headers, seconds=seconds)


def main() -> list[Figure]:
    """Serve lorapod and the anchor side by side and load each with the same runsync body."""
    rounds = 1 if "--quick" in sys.argv else ROUNDS
    ours, theirs = free_port(), free_port()
    json_headers = {"Content-Type": "application/json"}
    auth_headers = {**json_headers, "Authorization": f"Bearer {API_KEY}"}
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "LORAPOD_WORKSPACE": str(Path(tmp) / "ws"),
            "LORAPOD_API_KEY": API_KEY,
            "AI_TOOLKIT_DIR": str(FAKE_TOOLKIT),
        }
        lorapod = [PYTHON, "-m", "app", "serve", "--port", str(ours)]
        anchor = [
            PYTHON,
            str(ROOT / "bench" / "anchors" / "runpod_trivial_handler.py"),
            "--rp_serve_api",
            "--rp_api_port",
            str(theirs),
            "--rp_api_host",
            "127.0.0.1",
        ]
        with server(lorapod, port=ours, probe="/health", env=env), server(anchor, port=theirs, probe="/docs"):
            measured = alternate(
                rounds,
                lorapod=checked(
                    f"http://127.0.0.1:{ours}/v2/bench/runsync", auth_headers, lambda out: out.get("status") == "ok"
                ),
                anchor=checked(f"http://127.0.0.1:{theirs}/runsync", json_headers, lambda out: out == {"status": "ok"}),
            )
    ours_load, anchor_load = measured["lorapod"], measured["anchor"]
    detail = (
        f"p50 {ours_load.p50_ms:.1f} ms vs {anchor_load.p50_ms:.1f} ms; "
        f"errors: lorapod {ours_load.errors}, anchor {anchor_load.errors}"
    )
    return [
        higher_is_better(
            "P3",
            "POST /v2/{id}/runsync health, req/s",
            ours_load.rps,
            "req/s",
            anchor=ANCHOR,
            anchor_value=anchor_load.rps,
            goal=1.0,
            detail=detail,
        ),
        lower_is_better(
            "P3",
            "POST /v2/{id}/runsync health, p99",
            ours_load.p99_ms,
            "ms",
            anchor=ANCHOR,
            anchor_value=anchor_load.p99_ms,
            goal=1.0,
        ),
    ]


if __name__ == "__main__":
    raise SystemExit(finish(main()))
