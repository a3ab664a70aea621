"""P4 and P5, the big transfers: a 1 GiB dataset upload and a 1 GiB LoRA download, against a bare Starlette app.

P4 uploads a 1 GiB dataset as a user would (`curl -F files=@img_000.jpg -F files=@img_000.txt ...`: JPEG photos of
4 MiB with their captions) to lorapod's `POST /datasets/{name}/files` and, with the same curl command, to the
anchor's route that streams the request body to a file (bench/anchors/bare_transfer.py). P5 downloads a finished
training's 1 GiB LoRA through `GET /jobs/{id}/artifacts/{name}` (curl) and through the contract's chunked
`download` on `/v2/{endpoint}/runsync` (a Python client decoding each chunk's base64 and writing it out, as a
client reassembling the file would), both against the anchor's `FileResponse` of the same file (a hard link),
fetched with curl; the chunks' detail line adds what base64 and JSON alone allow on this machine (encoding_floor),
the ceiling of any chunked download. Rounds alternate lorapod and the anchor; figures are medians. Peak RSS is
lorapod's server process (VmHWM), one server for the uploads and a fresh one for the downloads.

Both servers keep their files in one temporary folder (same filesystem). Disk write-back makes upload timings
noisy; `--tmpfs` puts that folder on /dev/shm for both (the default is the system's temporary folder).
Run: python bench/bench_transfer.py [--quick] [--tmpfs] [--json PATH]   (needs curl; exit 1 if a goal is missed)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import http.client
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

from bench.http_load import PYTHON, ROUNDS, free_port, peak_rss_mb, server, uvicorn_args  # noqa: E402
from bench.report import Figure, at_most, finish, higher_is_better  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.storage.files import max_raw_chunk  # noqa: E402

API_KEY = "bench-transfer-key"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MIB = 1024**2
IMAGE_BYTES = 4 * MIB  # a phone photo
ANCHOR = "bare Starlette route (bench/anchors/bare_transfer.py)"
RSS_LIMIT_MB = 150.0


def curl(*args: str) -> tuple[int, float, int]:
    """Run curl; its status code, total seconds and downloaded bytes."""
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{time_total} %{size_download}", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return int(out[0]), float(out[1]), int(out[2])


def jpeg_head() -> bytes:
    """A real tiny JPEG: the bytes a photo starts with (lorapod checks content, not names)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (120, 80, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


def make_dataset(folder: Path, total: int) -> list[Path]:
    """JPEG photos of IMAGE_BYTES with a caption each, about total bytes in all; the files in upload order."""
    folder.mkdir(parents=True)
    head = jpeg_head()
    files = []
    for index in range(max(1, total // IMAGE_BYTES)):
        image = folder / f"img_{index:03d}.jpg"
        image.write_bytes(head + os.urandom(IMAGE_BYTES - len(head)))
        caption = folder / f"img_{index:03d}.txt"
        caption.write_text(f"a photo of sks person, picture {index}\n")
        files += [image, caption]
    return files


def upload_args(files: list[Path]) -> list[str]:
    """curl's -F arguments for the dataset's files in the field `files`."""
    return [arg for path in files for arg in ("-F", f"files=@{path}")]


def timed_upload(url: str, files: list[Path], headers: dict[str, str]) -> float:
    """Seconds to upload the files in one multipart request (200 expected)."""
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    status, seconds, _ = curl(*header_args, *upload_args(files), url)
    if status != 200:
        raise RuntimeError(f"upload to {url} answered {status}")
    return seconds


def timed_get(url: str, headers: dict[str, str], size: int) -> float:
    """Seconds to download url to /dev/null with curl (all size bytes expected)."""
    header_args = [arg for name, value in headers.items() for arg in ("-H", f"{name}: {value}")]
    status, seconds, received = curl(*header_args, url)
    if status != 200 or received != size:
        raise RuntimeError(f"download of {url} answered {status} with {received} of {size} bytes")
    return seconds


def contract_download(port: int, process_id: str, write: Callable[[bytes], Any]) -> tuple[float, str]:
    """Seconds to fetch a process's main artifact chunk by chunk through /runsync, and the sha256 it reports."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = {**AUTH, "Content-Type": "application/json"}
    offset: int | None = 0
    sha256 = ""
    began = time.perf_counter()
    while offset is not None:
        payload = {"input": {"type": "download", "process_id": process_id, "offset": offset}}
        conn.request("POST", "/v2/bench/runsync", json.dumps(payload), headers)
        answer = json.loads(conn.getresponse().read())
        if answer.get("status") != "COMPLETED":
            raise RuntimeError(f"download chunk at {offset}: {str(answer)[:300]}")
        out = answer["output"]
        write(base64.b64decode(out["content"]))
        offset, sha256 = out["next_offset"], out["sha256"]
    elapsed = time.perf_counter() - began
    conn.close()
    return elapsed, sha256


def encoding_floor(size: int, chunk: int) -> float:
    """MB/s of the chunked path's own work on size bytes with no I/O: each chunk's base64 (server), then its answer's
    JSON parsed and the base64 decoded (client); the best of three tries per chunk."""
    block = os.urandom(chunk)
    best = float("inf")
    for _ in range(3):
        began = time.perf_counter()
        encoded = binascii.b2a_base64(block, newline=False)
        answer = json.loads(b'{"output": {"content": "' + encoded + b'"}}')
        base64.b64decode(answer["output"]["content"])
        best = min(best, time.perf_counter() - began)
    return size / MIB / (best * size / chunk)


def write_safetensors(path: Path, size: int) -> str:
    """Replace path with a valid safetensors file of about size bytes (one U8 tensor); its sha256."""
    header = json.dumps({"lora": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    digest = hashlib.sha256()
    with path.open("wb") as sink:
        for block in (len(header).to_bytes(8, "little"), header):
            digest.update(block)
            sink.write(block)
        left = size
        while left:
            block = os.urandom(min(left, 16 * MIB))
            digest.update(block)
            sink.write(block)
            left -= len(block)
    return digest.hexdigest()


def api(port: int, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One JSON call to lorapod."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        method, path, json.dumps(body) if body is not None else None, {**AUTH, "Content-Type": "application/json"}
    )
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.status >= 300:
        raise RuntimeError(f"{method} {path} answered {response.status}: {data[:300]!r}")
    return json.loads(data) if data else None


def train_small_lora(port: int, seed_files: list[Path]) -> str:
    """A finished training (the stand-in trainer) whose LoRA the download figures replace; its process id."""
    timed_upload(f"http://127.0.0.1:{port}/datasets/seed/files", seed_files, AUTH)
    job = api(port, "POST", "/jobs", {"type": "train", "training_name": "seed", "base_model": "sd15", "steps": 2})
    deadline = time.monotonic() + 120
    while (status := api(port, "GET", f"/jobs/{job['id']}")["status"]) not in ("completed", "failed", "cancelled"):
        if time.monotonic() > deadline:
            raise TimeoutError("the seed training did not finish")
        time.sleep(0.1)
    if status != "completed":
        raise RuntimeError(f"the seed training ended {status}")
    return str(job["id"])


@contextmanager
def lorapod(port: int, workspace: Path) -> Iterator[subprocess.Popen[bytes]]:
    """lorapod served as a pod serves it, with the stand-in trainer for the seed training."""
    env = {
        "LORAPOD_WORKSPACE": str(workspace),
        "LORAPOD_API_KEY": API_KEY,
        "LORAPOD_AI_TOOLKIT_DIR": str(ROOT / "tests" / "fakes" / "ai_toolkit"),
        "LORAPOD_AI_TOOLKIT_PYTHON": PYTHON,
        "LORAPOD_GPUS": "0",
        "LORAPOD_LOG_LEVEL": "warning",
        "FAKE_AITK_STEP_SECONDS": "0.01",
        "HF_HUB_OFFLINE": "1",
    }
    with server([PYTHON, "-m", "app", "serve", "--port", str(port)], port=port, probe="/health", env=env) as proc:
        yield proc


def median_rate(seconds: list[float], size: int) -> float:
    """MB/s of the median round."""
    return size / MIB / statistics.median(seconds)


def main() -> list[Figure]:
    """Every figure of this benchmark, in a temporary folder removed afterwards."""
    quick = "--quick" in sys.argv
    rounds = 1 if quick else ROUNDS
    total = (256 if quick else 1024) * MIB
    base = Path(tempfile.mkdtemp(prefix="lorapod-bench-transfer-", dir="/dev/shm" if "--tmpfs" in sys.argv else None))
    try:
        return run(base, total, rounds)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(base: Path, total: int, rounds: int) -> list[Figure]:
    """P4 with the anchor served alongside, then P5."""
    workspace, anchor_dir = base / "workspace", base / "anchor"
    anchor_dir.mkdir()
    files = make_dataset(base / "dataset", total)
    size = sum(path.stat().st_size for path in files)
    anchor_port, port = free_port(), free_port()
    anchor_env = {"ANCHOR_DIR": str(anchor_dir)}
    figures: list[Figure] = []
    with server(uvicorn_args("bench.anchors.bare_transfer:app", anchor_port), port=anchor_port, env=anchor_env):
        with lorapod(port, workspace) as proc:
            process_id = train_small_lora(port, files[:2])
            ours: list[float] = []
            theirs: list[float] = []
            for index in range(rounds):
                ours.append(timed_upload(f"http://127.0.0.1:{port}/datasets/big{index}/files", files, AUTH))
                api(port, "DELETE", f"/datasets/big{index}")
                theirs.append(timed_upload(f"http://127.0.0.1:{anchor_port}/upload", files, {}))
                for left in anchor_dir.glob("upload-*"):
                    left.unlink()
            upload_rss = peak_rss_mb(proc.pid)
        rate, anchor_rate = median_rate(ours, size), median_rate(theirs, size)
        what = f"{size / MIB:,.0f} MiB dataset upload ({len(files) // 2} photos + captions, curl -F)"
        detail = f"rounds lorapod {ours} s, anchor {theirs} s"
        figures.append(
            higher_is_better("P4", what, rate, "MB/s", anchor=ANCHOR, anchor_value=anchor_rate, goal=0.7, detail=detail)
        )
        figures.append(at_most("P4", "peak server RSS during the uploads", upload_rss, "MB", limit=RSS_LIMIT_MB))
        figures += downloads(workspace, anchor_dir, anchor_port, process_id, total, rounds)
    return figures


def downloads(
    workspace: Path, anchor_dir: Path, anchor_port: int, process_id: str, total: int, rounds: int
) -> list[Figure]:
    """P5: the LoRA through the REST stream and the contract's chunks, each against the anchor's FileResponse."""
    port = free_port()
    with lorapod(port, workspace) as proc:
        lora = next(a for a in api(port, "GET", f"/jobs/{process_id}/artifacts")["data"] if a["kind"] == "lora")
        path = workspace / lora["path"]
        sha256 = write_safetensors(path, total)
        size = path.stat().st_size
        os.link(path, anchor_dir / path.name)
        rest_url = f"http://127.0.0.1:{port}/jobs/{process_id}/artifacts/{lora['name']}"
        anchor_url = f"http://127.0.0.1:{anchor_port}/files/{path.name}"
        # One untimed pass each: the page cache holds the file for both, and the reassembled chunks are checked.
        timed_get(anchor_url, {}, size)
        check = hashlib.sha256()
        _, reported = contract_download(port, process_id, check.update)
        if not reported == check.hexdigest() == sha256:
            raise RuntimeError("the reassembled chunks differ from the file")
        rest: list[float] = []
        chunked: list[float] = []
        anchor: list[float] = []
        with open(os.devnull, "wb") as sink:
            for _ in range(rounds):
                rest.append(timed_get(rest_url, AUTH, size))
                anchor.append(timed_get(anchor_url, {}, size))
                chunked.append(contract_download(port, process_id, sink.write)[0])
        rss = peak_rss_mb(proc.pid)
    anchor_rate = median_rate(anchor, size)
    floor = encoding_floor(size, max_raw_chunk(Settings().payload_limit_run_bytes))
    label = f"{size / MIB:,.0f} MiB LoRA download"
    anchor_name = "Starlette FileResponse of the same file (bench/anchors/bare_transfer.py)"
    return [
        higher_is_better(
            "P5",
            f"{label}, REST stream (curl)",
            median_rate(rest, size),
            "MB/s",
            anchor=anchor_name,
            anchor_value=anchor_rate,
            goal=0.9,
            detail=f"rounds {rest} s, anchor {anchor} s",
        ),
        higher_is_better(
            "P5",
            f"{label}, contract chunks via /runsync, reassembled",
            median_rate(chunked, size),
            "MB/s",
            anchor=anchor_name,
            anchor_value=anchor_rate,
            goal=0.9,
            detail=(
                f"rounds {chunked} s; base64 and JSON alone, with no I/O, cap the chunks at {floor:,.0f} MB/s "
                f"({floor / anchor_rate:.2f}x the anchor), {median_rate(chunked, size) / floor:.0%} of it reached"
            ),
        ),
        at_most("P5", "peak server RSS during the downloads", rss, "MB", limit=RSS_LIMIT_MB),
    ]


if __name__ == "__main__":
    figures = main()
    raise SystemExit(finish(figures))
